/**
 * Heap snapshots of a running Deno process through its inspector (`--inspect=HOST:PORT`), and a summary of
 * what the heap holds: self size by node type and by constructor. Used by `deno task bench:relay
 * --heap-snapshot FILE` to say where the server's memory per agent goes; also runnable by hand:
 *
 *   deno run -A scripts/heap_snapshot.ts 127.0.0.1:9229 out.heapsnapshot
 *
 * The file opens in Chrome DevTools (Memory tab → Load).
 * @module
 */

/** One row of a heap summary. */
export interface HeapRow {
  what: string;
  count: number;
  selfBytes: number;
}

/** Self sizes of a snapshot, by node type and by constructor name (largest first). */
export interface HeapSummary {
  totalBytes: number;
  nodes: number;
  byType: HeapRow[];
  byConstructor: HeapRow[];
}

/**
 * Memory as the process sees it (`Deno.memoryUsage()` and V8's heap spaces), read through its inspector:
 * tells live heap from heap V8 holds but does not use, and both from memory outside the JS heap.
 */
export async function memoryOf(inspect: string): Promise<Record<string, number>> {
  const expr = `(async () => {
    const v8 = await import("node:v8");
    const m = Deno.memoryUsage();
    const out = { rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external };
    for (const s of v8.getHeapSpaceStatistics()) {
      out[s.space_name + ".size"] = s.space_size;
      out[s.space_name + ".used"] = s.space_used_size;
    }
    const h = v8.getHeapStatistics();
    out.mallocedMemory = h.malloced_memory;
    out.peakMallocedMemory = h.peak_malloced_memory;
    return JSON.stringify(out);
  })()`;
  const r = await inspectorCall(inspect, "Runtime.evaluate", { expression: expr, awaitPromise: true }) as {
    result?: { result?: { value?: string } };
  };
  const v = r.result?.result?.value;
  if (typeof v !== "string") {
    throw new Error(`memoryOf: unexpected answer ${JSON.stringify(r).slice(0, 200)}`);
  }
  return JSON.parse(v);
}

interface InspectorSession {
  send(method: string, params?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

/** One DevTools-protocol session with the inspector on `inspect`; `onEvent` sees its notifications. */
async function openInspector(
  inspect: string,
  onEvent: (method: string, params: Record<string, unknown>) => void = () => {},
): Promise<InspectorSession> {
  const targets = await (await fetch(`http://${inspect}/json/list`)).json() as {
    webSocketDebuggerUrl: string;
  }[];
  if (!targets[0]?.webSocketDebuggerUrl) throw new Error(`no inspector target at ${inspect}`);
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot connect to the inspector at ${inspect}`));
  });
  let nextId = 1;
  const pending = new Map<number, (r: unknown) => void>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(String(e.data));
    if (typeof msg.method === "string") onEvent(msg.method, msg.params ?? {});
    else if (typeof msg.id === "number") pending.get(msg.id)?.(msg);
  };
  return {
    send: (method, params = {}) =>
      new Promise((resolve) => {
        const id = nextId++;
        pending.set(id, resolve);
        ws.send(JSON.stringify({ id, method, params }));
      }),
    close: () => ws.close(),
  };
}

async function inspectorCall(
  inspect: string,
  method: string,
  params: Record<string, unknown>,
): Promise<unknown> {
  const session = await openInspector(inspect);
  try {
    return await session.send(method, params);
  } finally {
    session.close();
  }
}

/** Takes a heap snapshot of the process whose inspector listens on `inspect` (`host:port`). */
export async function takeHeapSnapshot(inspect: string): Promise<string> {
  const chunks: string[] = [];
  const session = await openInspector(inspect, (method, params) => {
    if (method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(String(params.chunk));
  });
  try {
    await session.send("HeapProfiler.enable");
    await session.send("HeapProfiler.collectGarbage");
    await session.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  } finally {
    session.close();
  }
  return chunks.join("");
}

/** Self sizes in a V8 heap snapshot (the `.heapsnapshot` JSON), grouped by type and constructor. */
export function summarizeHeapSnapshot(text: string): HeapSummary {
  const snap = JSON.parse(text);
  const fields: string[] = snap.snapshot.meta.node_fields;
  const types: string[] = snap.snapshot.meta.node_types[0];
  const nf = fields.length;
  const [iType, iName, iSize] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const nodes: number[] = snap.nodes;
  const strings: string[] = snap.strings;
  const byType = new Map<string, HeapRow>();
  const byCtor = new Map<string, HeapRow>();
  let total = 0;
  const add = (m: Map<string, HeapRow>, what: string, size: number) => {
    const r = m.get(what) ?? { what, count: 0, selfBytes: 0 };
    r.count++;
    r.selfBytes += size;
    m.set(what, r);
  };
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + iType]];
    const size = nodes[i + iSize];
    total += size;
    add(byType, type, size);
    const name = strings[nodes[i + iName]];
    // Strings are named by their content: one bucket for them, like the other primitive types.
    const key = type === "object" || type === "closure" || type === "native"
      ? `${type}:${name.slice(0, 60)}`
      : type;
    add(byCtor, key, size);
  }
  const sorted = (m: Map<string, HeapRow>) => [...m.values()].sort((a, b) => b.selfBytes - a.selfBytes);
  return {
    totalBytes: total,
    nodes: nodes.length / nf,
    byType: sorted(byType),
    byConstructor: sorted(byCtor),
  };
}

/** What grew from `before` to `after` (rows with the largest growth first). */
export function diffHeapSummaries(before: HeapSummary, after: HeapSummary): HeapSummary {
  const diff = (a: HeapRow[], b: HeapRow[]) => {
    const m = new Map(a.map((r) => [r.what, r]));
    return b.map((r) => ({
      what: r.what,
      count: r.count - (m.get(r.what)?.count ?? 0),
      selfBytes: r.selfBytes - (m.get(r.what)?.selfBytes ?? 0),
    })).sort((x, y) => y.selfBytes - x.selfBytes);
  };
  return {
    totalBytes: after.totalBytes - before.totalBytes,
    nodes: after.nodes - before.nodes,
    byType: diff(before.byType, after.byType),
    byConstructor: diff(before.byConstructor, after.byConstructor),
  };
}

/** The summary as a small text table. */
export function formatHeapSummary(
  s: HeapSummary,
  o: { top?: number; perUnit?: { n: number; unit: string } } = {},
): string {
  const perUnit = o.perUnit;
  const kib = (b: number) => (b / 1024).toFixed(0).padStart(9) + " KiB";
  const per = (b: number) => perUnit ? `${(b / perUnit.n).toFixed(0).padStart(8)} B/${perUnit.unit}` : "";
  const rows = (xs: HeapRow[]) =>
    xs.map((r) =>
      `  ${r.what.padEnd(66)} ${String(r.count).padStart(9)} ${kib(r.selfBytes)} ${per(r.selfBytes)}`
    );
  return [
    `heap: ${kib(s.totalBytes).trim()} in ${s.nodes} nodes ${per(s.totalBytes)}`,
    "by type:",
    ...rows(s.byType),
    "by constructor:",
    ...rows(s.byConstructor.slice(0, o.top ?? 25)),
  ].join("\n");
}

if (import.meta.main) {
  const [inspect, out] = Deno.args;
  if (!inspect || !out) {
    console.error("usage: deno run -A scripts/heap_snapshot.ts HOST:PORT OUT.heapsnapshot");
    Deno.exit(2);
  }
  const text = await takeHeapSnapshot(inspect);
  await Deno.writeTextFile(out, text);
  console.log(formatHeapSummary(summarizeHeapSnapshot(text)));
}
