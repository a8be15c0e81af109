// A frontend's use of the API, typed by the types generated from contracts/openapi.yaml.
// `tsc` fails when a contract change would break this code; `node dist/usage.js URL TOKEN`
// runs it against a live server and exits non-zero on any unexpected answer.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Task = components["schemas"]["Task"];
type Problem = components["schemas"]["Problem"];

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

// Every wait a 429 asked for, in seconds (what `rateLimits` checks).
export const waits: number[] = [];

// Over a rate limit the server answers 429 with Retry-After (seconds): waits that long and
// sends the request again, a few times. Retrying at once would only be refused again, and
// the wait it names is enough: the server never names one too short.
export function honouringRetryAfter(inner: typeof fetch = fetch, attempts = 5): typeof fetch {
  return async (input, init) => {
    for (let attempt = 1; ; attempt++) {
      // A Request's body can be read once: each attempt sends a copy.
      const request = input instanceof Request ? input.clone() : input;
      const response = await inner(request, init);
      const seconds = Number(response.headers.get("Retry-After"));
      if (response.status !== 429 || attempt === attempts || !Number.isInteger(seconds)) {
        return response;
      }
      waits.push(seconds);
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    }
  };
}

export async function lifecycle(baseUrl: string, token: string): Promise<void> {
  const api = createClient<paths>({
    baseUrl,
    headers: { Authorization: `Bearer ${token}` },
    fetch: honouringRetryAfter(),
  });

  const created: Task[] = [];
  for (const title of ["first", "second", "third"]) {
    const { data, response } = await api.POST("/api/tasks", { body: { title } });
    check(response.status === 201 && data !== undefined, `create: ${response.status}`);
    check(response.headers.get("Location") === `/api/tasks/${data.id}`, "create: Location");
    created.push(data);
  }

  const first = await api.GET("/api/tasks", { params: { query: { limit: 2, completed: false } } });
  check(first.data !== undefined && first.data.tasks.length === 2, "list: first page");
  const cursor: string | null = first.data.next_cursor;
  check(cursor !== null, "list: a next page");
  const second = await api.GET("/api/tasks", { params: { query: { limit: 2, cursor } } });
  check(second.data?.next_cursor === null, "list: last page");

  const id = created[0]!.id;
  const path = { params: { path: { id } } };
  const read = await api.GET("/api/tasks/{id}", path);
  check(read.data?.title === "first", "get");

  const replaced = await api.PUT("/api/tasks/{id}", { ...path, body: { title: "replaced", completed: true } });
  check(replaced.data?.completed === true, "replace");

  const patched = await api.PATCH("/api/tasks/{id}", { ...path, body: { title: "  patched " } });
  check(patched.data?.title === "patched", "update");

  const toggled = await api.PATCH("/api/tasks/{id}/complete", path);
  const completed: boolean | undefined = toggled.data?.completed;
  check(completed === false, "toggle");

  const deleted = await api.DELETE("/api/tasks/{id}", path);
  const success: true | undefined = deleted.data?.success;
  check(success === true, "delete");

  const missing = await api.GET("/api/tasks/{id}", path);
  const problem: Problem | undefined = missing.error;
  check(missing.response.status === 404 && problem?.status === 404, "missing task is a 404 problem");

  const stranger = createClient<paths>({ baseUrl, headers: { Authorization: "Bearer not-a-token" } });
  const refused = await stranger.GET("/api/tasks");
  check(refused.response.status === 401 && refused.error?.status === 401, "bad token is a 401 problem");
}

// A fetch that loses the first response it gets: the server did the work, the client never
// hears of it (a phone that went through a tunnel). What a retry must survive.
function losingTheFirstResponse(inner: typeof fetch = honouringRetryAfter()): typeof fetch {
  let lost = false;
  return async (input, init) => {
    const response = await inner(input, init);
    if (!lost) {
      lost = true;
      throw new TypeError("network error: the response was lost");
    }
    return response;
  };
}

// Retries a request after a network error, as frontends do; the key makes it safe.
async function withRetries<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof TypeError) || tries === 3) throw error;
    }
  }
}

export async function safeRetriesAndNoLostUpdates(baseUrl: string, token: string): Promise<void> {
  const headers = { Authorization: `Bearer ${token}` };
  const api = createClient<paths>({ baseUrl, headers, fetch: honouringRetryAfter() });

  // A create whose response is lost, retried with the same Idempotency-Key: one task.
  const flaky = createClient<paths>({ baseUrl, headers, fetch: losingTheFirstResponse() });
  const key = crypto.randomUUID();
  const created = await withRetries(() =>
    flaky.POST("/api/tasks", {
      params: { header: { "Idempotency-Key": key } },
      body: { title: "retried once" },
    }),
  );
  check(created.response.status === 201 && created.data !== undefined, "retried create: 201");
  check(created.response.headers.get("Idempotent-Replayed") === "true", "retried create: replayed");
  const all = await api.GET("/api/tasks", { params: { query: { limit: 200 } } });
  const copies = all.data?.tasks.filter((task) => task.title === "retried once") ?? [];
  check(copies.length === 1, `retried create: ${copies.length} tasks`);

  // A toggle whose response is lost, retried with its key: flipped once, not back.
  const id = created.data.id;
  const path = { id };
  const toggleKey = crypto.randomUUID();
  const toggler = createClient<paths>({ baseUrl, headers, fetch: losingTheFirstResponse() });
  const toggled = await withRetries(() =>
    toggler.PATCH("/api/tasks/{id}/complete", {
      params: { path, header: { "Idempotency-Key": toggleKey } },
    }),
  );
  check(toggled.data?.completed === true, "retried toggle: completed");
  const afterToggle = await api.GET("/api/tasks/{id}", { params: { path } });
  check(afterToggle.data?.completed === true, "retried toggle: flipped once");

  // Two devices edit the task from the same version: the second learns of the first (412),
  // reads the task again and applies its change to the new version.
  const etag = afterToggle.response.headers.get("ETag") ?? "";
  const phone = await api.PATCH("/api/tasks/{id}", {
    params: { path, header: { "If-Match": etag } },
    body: { title: "from the phone" },
  });
  check(phone.response.status === 200, "first edit: 200");
  const laptop = await api.PATCH("/api/tasks/{id}", {
    params: { path, header: { "If-Match": etag } },
    body: { completed: false },
  });
  check(laptop.response.status === 412 && laptop.error?.status === 412, "stale edit: 412");
  const fresh = await api.GET("/api/tasks/{id}", { params: { path } });
  const again = await api.PATCH("/api/tasks/{id}", {
    params: { path, header: { "If-Match": fresh.response.headers.get("ETag") ?? "" } },
    body: { completed: false },
  });
  check(again.data?.title === "from the phone" && again.data.completed === false, "merged");

  // Unchanged since the last read: 304, nothing to transfer.
  const unchanged = await api.GET("/api/tasks/{id}", {
    params: { path, header: { "If-None-Match": again.response.headers.get("ETag") ?? "" } },
  });
  check(unchanged.response.status === 304, `conditional read: ${unchanged.response.status}`);
}

// A burst past the user's quota: every request ends in a 200, after the waits the 429s named.
export async function rateLimits(baseUrl: string, token: string): Promise<void> {
  const headers = { Authorization: `Bearer ${token}` };
  const api = createClient<paths>({ baseUrl, headers, fetch: honouringRetryAfter() });
  const first = await api.GET("/api/tasks");
  const policy = first.response.headers.get("RateLimit-Policy") ?? "";
  const quota = Number(/;q=(\d+)/.exec(policy)?.[1] ?? "0");
  check(first.response.status === 200 && quota > 0, `rate limits: RateLimit-Policy ${policy}`);
  check(/^"user";r=\d+;t=\d+$/.test(first.response.headers.get("RateLimit") ?? ""), "RateLimit");
  const before = waits.length;
  const burst = Math.min(quota + 5, 60);
  for (let sent = 0; sent < burst; sent++) {
    const { response } = await api.GET("/api/tasks");
    check(response.status === 200, `rate limits: request ${sent} answered ${response.status}`);
  }
  check(burst <= quota || waits.length > before, "rate limits: no 429 over the quota");
}

const [baseUrl, token] = process.argv.slice(2);
if (baseUrl !== undefined && token !== undefined) {
  await lifecycle(baseUrl, token);
  console.log("typescript client: lifecycle passed against", baseUrl);
  await safeRetriesAndNoLostUpdates(baseUrl, token);
  console.log("typescript client: safe retries and no lost updates passed against", baseUrl);
  await rateLimits(baseUrl, token);
  console.log("typescript client: rate limits honoured, waited", waits, "seconds");
}
