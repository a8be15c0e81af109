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

export async function lifecycle(baseUrl: string, token: string): Promise<void> {
  const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

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

const [baseUrl, token] = process.argv.slice(2);
if (baseUrl !== undefined && token !== undefined) {
  await lifecycle(baseUrl, token);
  console.log("typescript client: lifecycle passed against", baseUrl);
}
