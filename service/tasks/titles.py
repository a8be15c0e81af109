"""What a task's title may be: the one rule the API, the contract and the database hold.

The contract's Title pattern and the CHECK constraints of `tasks` (service.tasks.table,
migrations 0002-0004) spell out the same sets; tests compare all three.
"""

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StrictStr

TITLE_MAX_CHARS = 500
# Exactly the characters JavaScript's String.prototype.trim removes, so a frontend can apply
# the same rule; the contract's Title pattern spells out the same set.
TITLE_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# What a title may not contain once trimmed, as a regular-expression character class: C0 and
# C1 control characters and DEL (an escape sequence rewrites the terminal that shows a log
# line), the bidirectional embedding, override and isolate controls (they reorder how the
# text around them is displayed), the noncharacters of the Basic Multilingual Plane, and the
# tag characters U+E0000-U+E007F (they render nothing and carry hidden text). The contract's
# Title pattern and the CHECK constraint ck_tasks_title_characters spell out the same set.
TITLE_REFUSED = (
    r"\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef\ufffe\uffff"
    r"\U000e0000-\U000e007f"
)
_REFUSED_IN_TITLE = re.compile(f"[{TITLE_REFUSED}]")
# Characters that show nothing by themselves: the whitespace above, every
# Default_Ignorable_Code_Point of Unicode (DerivedCoreProperties.txt: soft hyphen, zero-width
# space and joiners, word joiner and invisible operators, fillers, variation selectors,
# shorthand format controls U+1BCA0-U+1BCA3, musical formatting U+1D173-U+1D17A, and
# U+E0000-U+E0FFF) that is not refused outright, and U+2800 BRAILLE PATTERN BLANK, which is
# not Default_Ignorable but draws nothing (the other classic "blank name"). A title needs at
# least one character outside this set.
TITLE_INVISIBLE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u2800\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0080-\U000e0fff"
)
_VISIBLE_IN_TITLE = re.compile(f"[^{TITLE_INVISIBLE}]")


_LENGTH_RULE = f"must be 1 to {TITLE_MAX_CHARS} characters after trimming whitespace"


def clean_title(value: str) -> str:
    """The title as stored: trimmed and NFC-normalised, or ValueError saying which rule failed.

    NFC, so that one title has one spelling: "é" typed as one code point or as "e" and a
    combining accent is stored, compared and sorted alike.
    """
    title = value.strip(TITLE_WHITESPACE)
    if not 1 <= len(title) <= TITLE_MAX_CHARS:
        raise ValueError(_LENGTH_RULE)
    if _REFUSED_IN_TITLE.search(title):
        raise ValueError(
            "must not contain control characters, bidirectional controls, noncharacters or "
            "tag characters"
        )
    if not _VISIBLE_IN_TITLE.search(title):
        raise ValueError("must contain at least one visible character")
    try:
        title.encode()
    except UnicodeEncodeError:
        # A JSON escape such as "\ud800" decodes to a lone surrogate, which is not text.
        raise ValueError("must be valid Unicode text") from None
    title = unicodedata.normalize("NFC", title)
    # A few characters lengthen under NFC (U+0958 becomes two code points, U+FB2C three).
    if len(title) > TITLE_MAX_CHARS:
        raise ValueError(_LENGTH_RULE + " and normalising to NFC")
    return title


Title = Annotated[StrictStr, AfterValidator(clean_title)]
