import { assertEquals } from "../testing/assert.ts";
import { appliedFieldsOf, extractFields, type FieldsV1 } from "./managed_fields.ts";

// A live Service as the API server returns it after meshrelay applied name/port/selector/labels and
// someone else (or defaulting) added the rest.
const live = {
  apiVersion: "v1",
  kind: "Service",
  metadata: {
    name: "reviews",
    namespace: "apps",
    labels: { "app.kubernetes.io/managed-by": "meshrelay", team: "ops" },
  },
  spec: {
    clusterIP: "10.0.0.7",
    ports: [
      { name: "http", port: 9080, protocol: "TCP", targetPort: 9080 },
      { name: "extra", port: 7000, protocol: "TCP", targetPort: 7000 },
    ],
    selector: { app: "reviews" },
    hosts: ["a", "b"],
    finalizers: ["x", "y"],
  },
};

const ours: FieldsV1 = {
  "f:metadata": { "f:labels": { ".": {}, "f:app.kubernetes.io/managed-by": {} } },
  "f:spec": {
    "f:ports": { 'k:{"port":9080,"protocol":"TCP"}': { ".": {}, "f:name": {}, "f:port": {} } },
    "f:selector": {},
    "f:hosts": {},
    "f:finalizers": { 'v:"y"': {} },
  },
};

Deno.test("extractFields returns exactly the owned fields with their live values", async (t) => {
  const cases: { name: string; fields: FieldsV1; want: unknown }[] = [
    {
      name: "maps, keyed list items, atomic lists and set items",
      fields: ours,
      want: {
        metadata: { labels: { "app.kubernetes.io/managed-by": "meshrelay" } },
        spec: {
          ports: [{ name: "http", port: 9080 }],
          selector: { app: "reviews" },
          hosts: ["a", "b"],
          finalizers: ["y"],
        },
      },
    },
    {
      name: "list items by index",
      fields: { "f:spec": { "f:ports": { "i:1": { "f:name": {} } } } },
      want: { spec: { ports: [{ name: "extra" }] } },
    },
    {
      name: "fields the live object lacks are left out",
      fields: {
        "f:spec": { "f:gone": {}, "f:ports": { 'k:{"port":1,"protocol":"TCP"}': { "f:name": {} } } },
      },
      want: { spec: { ports: [] } },
    },
    { name: "no fields, nothing", fields: {}, want: {} },
  ];
  for (const c of cases) await t.step(c.name, () => assertEquals(extractFields(live, c.fields), c.want));
});

Deno.test("appliedFieldsOf picks the manager's Apply entry on the main resource at the version", async (t) => {
  const f1: FieldsV1 = { "f:data": {} };
  const f2: FieldsV1 = { "f:status": {} };
  const f3: FieldsV1 = { "f:spec": {} };
  const entries = [
    { manager: "meshrelay", operation: "Update", apiVersion: "v1", fieldsType: "FieldsV1", fieldsV1: f3 },
    { manager: "meshrelay", operation: "Apply", apiVersion: "v1", subresource: "status", fieldsV1: f2 },
    { manager: "kubectl", operation: "Apply", apiVersion: "v1", fieldsV1: f3 },
    { manager: "meshrelay", operation: "Apply", apiVersion: "v1", fieldsType: "FieldsV1", fieldsV1: f1 },
  ];
  const cases: [string, string, string, FieldsV1 | undefined][] = [
    ["found", "meshrelay", "v1", f1],
    ["other version", "meshrelay", "v2", undefined],
    ["other manager without Apply", "helm", "v1", undefined],
  ];
  for (const [name, manager, version, want] of cases) {
    await t.step(name, () => assertEquals(appliedFieldsOf(entries, manager, version), want));
  }
  await t.step(
    "no managedFields",
    () => assertEquals(appliedFieldsOf(undefined, "meshrelay", "v1"), undefined),
  );
});
