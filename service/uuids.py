"""The one spelling of a UUID this service accepts wherever a client names one."""

import re

# Matched with fullmatch: `$` would also match before a final newline. Only the canonical
# 8-4-4-4-12 form (any case): `urn:uuid:`, braces or bare hex would be second names for one
# thing, which a cache or a rule keyed on the text would not know.
CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
