import { assertEquals, assertThrows } from "./testing/assert.ts";
import { isMode, type Mode, narrow, type Needs, needsFromArgs, revocationsFor } from "./permissions.ts";

const key = (d: Deno.PermissionDescriptor): string =>
  d.name === "sys" ? `sys:${(d as Deno.SysPermissionDescriptor).kind}` : d.name;

Deno.test("revocationsFor: what each mode gives up", async (t) => {
  const cases: { mode: Mode; needs: Needs; want: string[] }[] = [
    { mode: "server", needs: {}, want: ["ffi", "run"] },
    { mode: "agent", needs: {}, want: ["ffi", "run"] },
    {
      mode: "certs",
      needs: {},
      want: [
        "ffi",
        "sys:hostname",
        "sys:osRelease",
        "sys:systemMemoryInfo",
        "net",
        "run",
        "sys:uid",
        "sys:gid",
      ],
    },
    {
      mode: "certs",
      needs: { kube: true },
      want: ["ffi", "sys:hostname", "sys:osRelease", "sys:systemMemoryInfo"],
    },
    // kube is only meaningful for certs; the long-running modes never spawn processes either way.
    { mode: "agent", needs: { kube: true }, want: ["ffi", "run"] },
  ];
  for (const c of cases) {
    await t.step(`${c.mode} ${JSON.stringify(c.needs)}`, () => {
      assertEquals(revocationsFor(c.mode, c.needs).map(key), c.want);
    });
  }
});

Deno.test("revocationsFor: unknown mode is a programming error", () => {
  assertThrows(() => revocationsFor("bogus" as Mode), TypeError);
});

Deno.test("narrow revokes exactly the planned descriptors, in order", () => {
  const seen: string[] = [];
  const revoker = {
    revokeSync(d: Deno.PermissionDescriptor): Deno.PermissionStatus {
      seen.push(key(d));
      return { state: "prompt" } as Deno.PermissionStatus;
    },
  };
  const revoked = narrow("certs", {}, revoker);
  assertEquals(seen, revoked.map(key));
  assertEquals(seen.includes("net"), true);
});

Deno.test("needsFromArgs: any --kube flag before -- means the Kubernetes API is used", async (t) => {
  const cases: [string[], boolean][] = [
    [["init", "--out", "pki"], false],
    [["init", "--kube"], true],
    [["init", "--kube=true"], true],
    [["init", "--kubeconfig", "/k"], true],
    [["init", "--kubeconfig=/k"], true],
    [["init", "--kube-context", "mgmt"], true],
    [["inspect", "--", "--kube"], false],
    [["init", "--kubernetes-is-not-a-flag"], false],
    [["register", "--cluster", "c1"], true],
    [["deregister", "--cluster", "c1", "--skip-remote"], true],
    [["inspect", "register"], false],
    [["init", "--mgmt-context", "m"], true],
    [["init", "--remote-kubeconfig=/k"], true],
    [["init", "--mgmt-namespace", "ns"], false],
    [[], false],
  ];
  for (const [args, kube] of cases) {
    await t.step(args.join(" ") || "(none)", () => assertEquals(needsFromArgs(args), { kube }));
  }
});

Deno.test("isMode", () => {
  assertEquals(["server", "agent", "certs", "version", undefined].map(isMode), [
    true,
    true,
    true,
    false,
    false,
  ]);
});
