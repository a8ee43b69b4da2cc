/**
 * Between src/state shapes and the Sync messages: objects travel as canonical JSON with their
 * content-hash version; sets of versions (Hello, Welcome) and diffs (discovery, desired) are split
 * into messages whose encoded size stays at or below a byte limit, instead of raising the limit.
 *
 * Sizes are computed from the protobuf encoding rules (tag + length varint + bytes), so a message
 * built here never exceeds the limit; tests check that against the real encoder.
 * @module
 */
import { InvalidInputError, ResourceExhaustedError } from "../errors.ts";
import type {
  AgentMessage,
  HeldVersion,
  Resource,
  ResourceDiff,
  ServerMessage,
  Welcome,
  WireObjectStatus,
} from "../proto/mod.ts";
import {
  canonicalJson,
  chunkBySize,
  type KubeObject,
  type ObjectKey,
  objectKey,
  type ObjectStatus,
  type ResourceVersion,
  resourceVersionOf,
  type VersionDiff,
  type VersionedUpsert,
} from "../state/mod.ts";

/** The gRPC default receive limit, and ours: 4 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * Smallest limit we accept: a message must hold its envelope and at least a modest object. Limits
 * below this would only turn ordinary objects into "too large" errors.
 */
export const MIN_MAX_MESSAGE_BYTES = 1024;

/**
 * How far a Sync message is filled with objects, versions or statuses before the next one starts
 * (an object larger than this travels alone, up to the message limit).
 *
 * Why small: under the pinned Deno, an HTTP/2 connection keeps resident memory in proportion to the
 * largest message it ever carried, in either direction, for as long as it stays open (measured per
 * connection on a bare grpc-js server: +15 KiB after 16 KB sent as 1 KB messages, +20 KiB as 2 KB
 * messages, +80-100 KiB as one 16 KB message; `deno task bench:message-size`). A server holds
 * thousands of connections for months, so the messages stay small and the limit only bounds a
 * single large object.
 */
export const SYNC_FILL_BYTES = 1024;

/**
 * How many encoded bytes of objects and keys an agent puts in one discovery generation (at most; one
 * larger object travels alone) before it waits for the generation's DiscoveryAck and sends the rest
 * as the next (`ResourceDiff.partial`).
 *
 * Why: under the pinned Deno, a TLS connection keeps native memory in proportion to what arrived on it
 * at once, with a step at 4 KiB: on a bare node:http2 TLS server, a connection that received one burst
 * keeps 6.3 KiB more at 2 KiB, 9.7 at 3 KiB, 24.4 at 4 KiB and 47.8 at 8 KiB; a second burst adds next
 * to nothing (`deno task bench:http2-leak`). So a generation, with its message envelopes, stays under
 * 4 KiB. 5,000 agents pushing 30 discovered objects each (whole) held the server at 482-507 MiB in
 * generations that stopped only once past 4 KiB, and at 466-468 MiB in generations kept within 3 KiB
 * (`deno task bench:relay --agents 5000 --discovered 30 --no-storm`).
 * The price is one round trip per generation, for the first push of a large cluster.
 */
export const DISCOVERY_PUSH_BYTES = 3072;

/**
 * Envelope bytes of every chunk besides its items: oneof tag + length (≤ 6), generation (≤ 11),
 * `last`/`more` (2), `max_message_bytes` (≤ 6), plus room for a cluster name or agent version, whose
 * bytes are added separately. Generous on purpose: the items are what must fit.
 */
export const ENVELOPE_BYTES = 32;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * grpc-js options for every relay channel and server: gRPC itself accepts messages up to `maxBytes`
 * both ways, and channels make no transparent retries (servers ignore that option).
 *
 * Why no retries: under Deno, a connection that receives a GOAWAY while it is being established can
 * leave grpc-js with a READY subchannel whose HTTP/2 session is already destroyed; every call start
 * then fails "not started", and grpc-js retries it transparently on the same subchannel, in a
 * microtask loop that never yields (100% CPU, timers never fire, the agent hangs). Measured here on
 * server restarts. Without retries the call fails with INTERNAL and the agent's own loop redials
 * with backoff; the Sync stream never needed gRPC-level retries anyway.
 */
export function grpcMessageOptions(maxBytes = DEFAULT_MAX_MESSAGE_BYTES): Record<string, number> {
  return {
    "grpc.max_receive_message_length": maxBytes,
    "grpc.max_send_message_length": maxBytes,
    "grpc.enable_retries": 0,
  };
}

/** Validates a configured message limit. */
export function checkMaxMessageBytes(maxBytes: number): number {
  if (!Number.isInteger(maxBytes) || maxBytes < MIN_MAX_MESSAGE_BYTES || maxBytes > 2 ** 31 - 1) {
    throw new InvalidInputError(
      `max message size must be an integer between ${MIN_MAX_MESSAGE_BYTES} and ${
        2 ** 31 - 1
      } bytes, got ${maxBytes}`,
    );
  }
  return maxBytes;
}

function varintLen(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** Encoded size of a length-delimited field (tag < 16) carrying `n` bytes. */
function lenField(n: number): number {
  return 1 + varintLen(n) + n;
}

function strBytes(s: string): number {
  return utf8.encode(s).byteLength;
}

/** Encoded size of a `Resource` as an element of a repeated field. */
export function resourceWireSize(r: Resource): number {
  const inner = lenField(strBytes(r.key)) + lenField(strBytes(r.version)) + lenField(r.objectJson.byteLength);
  return lenField(inner);
}

/** Encoded size of a `HeldVersion` as an element of a repeated field. */
export function heldWireSize(h: HeldVersion): number {
  return lenField(lenField(strBytes(h.key)) + lenField(strBytes(h.version)));
}

/** Encoded size of a delete key as an element of `ResourceDiff.deletes`. */
function deleteWireSize(key: string): number {
  return lenField(strBytes(key));
}

/** An object on the wire: canonical JSON, so the receiver recomputes the same version. */
export function toResource(u: { key: ObjectKey; object: KubeObject; version: ResourceVersion }): Resource {
  return { key: u.key, version: u.version, objectJson: utf8.encode(canonicalJson(u.object)) };
}

/**
 * {@linkcode toResource} for objects that are never modified once handed out (the server's desired
 * state, whose objects thousands of clusters share): each is encoded once, not once per cluster and
 * generation it is sent in.
 */
export class SharedResourceEncoder {
  #bytes = new WeakMap<KubeObject, Uint8Array>();

  /** The wire form of `u`, its JSON bytes encoded at most once per object. */
  encode(u: { key: ObjectKey; object: KubeObject; version: ResourceVersion }): Resource {
    let b = this.#bytes.get(u.object);
    if (!b) this.#bytes.set(u.object, b = utf8.encode(canonicalJson(u.object)));
    return { key: u.key, version: u.version, objectJson: b };
  }
}

/**
 * An object from the wire, checked: valid UTF-8 JSON of a Kubernetes-shaped object whose key and
 * content hash equal what the sender claims. A mismatch means a broken or hostile peer; trusting
 * its version would make both sides disagree forever about what is held.
 */
export function fromResource(r: Resource): VersionedUpsert {
  const name = JSON.stringify(r.key.slice(0, 200));
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8Decoder.decode(r.objectJson));
  } catch {
    throw new InvalidInputError(`object ${name}: not valid UTF-8 JSON`);
  }
  if (!isKubeObject(parsed)) {
    throw new InvalidInputError(
      `object ${name}: not a Kubernetes-shaped object (apiVersion, kind, metadata.name)`,
    );
  }
  const key = objectKey(parsed);
  if (key !== r.key) {
    throw new InvalidInputError(`object ${name}: its content has key ${JSON.stringify(key)}`);
  }
  const version = resourceVersionOf(parsed);
  if (version !== r.version) {
    throw new InvalidInputError(
      `object ${name}: version ${JSON.stringify(r.version)} does not match its content`,
    );
  }
  return { key, object: parsed, version };
}

function isKubeObject(v: unknown): v is KubeObject {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  const m = o.metadata as Record<string, unknown> | undefined;
  return typeof o.apiVersion === "string" && o.apiVersion !== "" && typeof o.kind === "string" &&
    o.kind !== "" &&
    m !== null && typeof m === "object" && !Array.isArray(m) && typeof m.name === "string" && m.name !== "" &&
    (m.namespace === undefined || typeof m.namespace === "string");
}

/** key → version as wire entries, sorted by key. */
export function toHeld(versions: ReadonlyMap<ObjectKey, ResourceVersion>): HeldVersion[] {
  return [...versions].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([key, version]) => ({
    key,
    version,
  }));
}

/** An object too large for any message: left out of the diff, reported by the caller. */
export interface OversizedObject {
  key: ObjectKey;
  bytes: number;
  maxBytes: number;
}

/** Text for an {@linkcode OversizedObject} (names the object, never its content). */
export function describeOversized(o: OversizedObject): string {
  return `object is ${o.bytes} bytes encoded and cannot fit in a message of at most ${o.maxBytes} bytes`;
}

/** Result of {@linkcode chunkDiff}. */
export interface ChunkedDiff {
  /** At least one message; only the last has `last = true`. */
  chunks: ResourceDiff[];
  /** Upserts that were left out because one alone exceeds the limit. */
  oversized: OversizedObject[];
  /** What was really sent: the diff minus the oversized upserts. */
  sent: VersionDiff;
  /** Sum of the encoded sizes of the items (objects and keys) in the chunks. */
  bytes: number;
  /** Items were left for a later generation because `budgetBytes` was spent (`sent` lacks them). */
  deferred: boolean;
}

type DiffItem = { del: string; size: number } | { res: Resource; upsert: VersionedUpsert; size: number };

/**
 * Splits a diff into `ResourceDiff` chunks of one generation, each encoding (inside its oneof
 * envelope) to at most `maxBytes`. An empty diff is one empty chunk with `last = true`, so the
 * receiver always learns that the generation is complete. Deletes go first (order does not matter
 * to the receiver, which acts only on the last chunk).
 *
 * With `budgetBytes`, the generation takes items (deletes first) while their encoded sizes stay within
 * the budget, at least one, and reports the rest as `deferred`: they are left for the next generation,
 * whose diff the caller computes against what the receiver acknowledged.
 */
export function chunkDiff(
  diff: VersionDiff,
  generation: number,
  maxBytes: number,
  encode: (u: VersionedUpsert) => Resource = toResource,
  budgetBytes = Infinity,
): ChunkedDiff {
  const items: DiffItem[] = [];
  const oversized: OversizedObject[] = [];
  const limit = maxBytes - ENVELOPE_BYTES;
  let total = 0;
  let deferred = false;
  const sentDeletes: ObjectKey[] = [];
  for (const key of diff.deletes) {
    const size = deleteWireSize(key);
    if (items.length > 0 && total + size > budgetBytes) {
      deferred = true;
      break;
    }
    if (size > limit) {
      // A key is at most a few hundred bytes in Kubernetes; one this long cannot be ours.
      throw new ResourceExhaustedError(`a delete key of ${size} bytes cannot fit in a message`);
    }
    items.push({ del: key, size });
    sentDeletes.push(key);
    total += size;
  }
  const sentUpserts: VersionedUpsert[] = [];
  for (const u of deferred ? [] : diff.upserts) {
    const res = encode(u);
    const size = resourceWireSize(res);
    if (items.length > 0 && total + size > budgetBytes) {
      deferred = true;
      break;
    }
    if (size > limit) {
      oversized.push({ key: u.key, bytes: size + ENVELOPE_BYTES, maxBytes });
      continue;
    }
    items.push({ res, upsert: u, size });
    sentUpserts.push(u);
    total += size;
  }
  const groups = chunkBySize(items, maxBytes, (i) => i.size, {
    baseBytes: ENVELOPE_BYTES,
    fillBytes: SYNC_FILL_BYTES,
  });
  if (groups.length === 0) groups.push([]);
  const chunks = groups.map((g, i): ResourceDiff => ({
    generation,
    upserts: g.flatMap((x) => "res" in x ? [x.res] : []),
    deletes: g.flatMap((x) => "del" in x ? [x.del] : []),
    last: i === groups.length - 1,
    partial: deferred && i === groups.length - 1,
  }));
  return {
    chunks,
    oversized,
    sent: { upserts: sentUpserts, deletes: sentDeletes },
    bytes: total,
    deferred,
  };
}

/** Splits held versions into groups that fit a message of `maxBytes` with `extraBytes` of other fields. */
function chunkHeld(held: HeldVersion[], maxBytes: number, extraBytes: number): HeldVersion[][] {
  const groups = chunkBySize(held, maxBytes, heldWireSize, {
    baseBytes: ENVELOPE_BYTES + extraBytes,
    fillBytes: SYNC_FILL_BYTES,
    describe: (h) => `held version of ${JSON.stringify(h.key.slice(0, 200))}`,
  });
  if (groups.length === 0) groups.push([]);
  return groups;
}

/** The agent's Hello, chunked: every message but the last has `more = true`. */
export function helloMessages(
  agentVersion: string,
  applied: ReadonlyMap<ObjectKey, ResourceVersion>,
  maxBytes: number,
): AgentMessage[] {
  const groups = chunkHeld(toHeld(applied), maxBytes, lenField(strBytes(agentVersion)));
  return groups.map((g, i) => ({
    hello: { agentVersion, applied: g, more: i < groups.length - 1 },
  }));
}

/** The server's Welcome, chunked: every message but the last has `more = true`. */
export function welcomeMessages(
  cluster: string,
  inventory: ReadonlyMap<ObjectKey, ResourceVersion>,
  maxBytes: number,
  /** Key prefixes whose content the server reads; given, every other object's version suffices. */
  contentKeyPrefixes?: readonly string[],
): ServerMessage[] {
  const prefixes = contentKeyPrefixes ? [...contentKeyPrefixes] : [];
  const extra = lenField(strBytes(cluster)) + prefixes.reduce((n, p) => n + lenField(strBytes(p)), 0) + 2;
  const groups = chunkHeld(toHeld(inventory), maxBytes, extra);
  return groups.map((g, i) => ({
    welcome: {
      cluster,
      inventory: g,
      more: i < groups.length - 1,
      maxMessageBytes: maxBytes,
      contentKeyPrefixes: prefixes,
      versionsSuffice: contentKeyPrefixes !== undefined,
    },
  }));
}

/**
 * What a server's Welcome says about discovered content: whether the object under a key must be sent
 * whole. Without `versions_suffice` (a server that predates it), every object is.
 */
export function contentNeededBy(welcome: Welcome): (key: ObjectKey) => boolean {
  if (!welcome.versionsSuffice) return () => true;
  const prefixes = [...welcome.contentKeyPrefixes];
  return (key) => prefixes.some((p) => key.startsWith(p));
}

const NO_BYTES = new Uint8Array(0);

/** A discovered object as its key and version alone, for a server that keeps only the version. */
export function toVersionOnlyResource(u: { key: ObjectKey; version: ResourceVersion }): Resource {
  return { key: u.key, version: u.version, objectJson: NO_BYTES };
}

/** Collects a chunked set of held versions (Hello or Welcome) until the message without `more`. */
export class HeldAssembler {
  #held = new Map<ObjectKey, ResourceVersion>();
  #done = false;
  #limit: number;
  #what: string;

  /** `maxEntries` bounds memory against a peer that never stops sending. */
  constructor(what: string, maxEntries: number) {
    this.#what = what;
    this.#limit = maxEntries;
  }

  /** Whether the final chunk arrived. */
  get done(): boolean {
    return this.#done;
  }

  /** Adds a chunk; returns the complete map on the final one. */
  add(entries: readonly HeldVersion[], more: boolean): Map<ObjectKey, ResourceVersion> | undefined {
    if (this.#done) throw new InvalidInputError(`${this.#what} received after it was complete`);
    for (const h of entries) {
      if (typeof h.key !== "string" || h.key === "") throw new InvalidInputError(`${this.#what}: empty key`);
      this.#held.set(h.key, h.version);
    }
    if (this.#held.size > this.#limit) {
      throw new ResourceExhaustedError(`${this.#what} lists more than ${this.#limit} objects`);
    }
    if (more) return undefined;
    this.#done = true;
    return this.#held;
  }
}

/** A discovered object as a server may receive it: whole, or (see Welcome) as its version alone. */
export interface DiscoveredUpsert {
  key: ObjectKey;
  version: ResourceVersion;
  /** Absent when the agent sent the version alone. */
  object?: KubeObject;
}

/**
 * Collects the chunks of one diff generation. Chunks of one generation must be contiguous; the
 * complete diff is returned on the chunk with `last = true`. Each object is checked by `parse`.
 */
class ChunkAssembler<U extends DiscoveredUpsert> {
  #generation: number | undefined;
  // Only while a generation is being assembled: an idle stream holds no empty map and set.
  #upserts?: Map<ObjectKey, U>;
  #deletes?: Set<ObjectKey>;
  #lastDone = 0;
  #what: string;
  #limit: number;
  #parse: (r: Resource) => U;

  /** `maxObjects` bounds what one pending diff may hold. */
  constructor(what: string, maxObjects: number, parse: (r: Resource) => U) {
    this.#what = what;
    this.#limit = maxObjects;
    this.#parse = parse;
  }

  /** Generation of the last complete diff (0 before the first). */
  get lastGeneration(): number {
    return this.#lastDone;
  }

  /**
   * Adds a chunk (validating every object); returns the complete diff on the last chunk, with
   * `partial` from that chunk (more generations of the same push follow).
   */
  add(
    chunk: ResourceDiff,
  ): { generation: number; diff: { upserts: U[]; deletes: ObjectKey[] }; partial: boolean } | undefined {
    const g = chunk.generation;
    if (!Number.isSafeInteger(g) || g <= 0) {
      throw new InvalidInputError(`${this.#what}: generation must be positive`);
    }
    if (this.#generation === undefined) {
      if (g <= this.#lastDone) {
        throw new InvalidInputError(
          `${this.#what}: generation ${g} does not follow ${this.#lastDone}`,
        );
      }
      this.#generation = g;
      this.#upserts = new Map();
      this.#deletes = new Set();
    } else if (g !== this.#generation) {
      throw new InvalidInputError(
        `${this.#what}: generation ${g} started before generation ${this.#generation} was complete`,
      );
    }
    const upserts = this.#upserts!;
    const deletes = this.#deletes!;
    for (const key of chunk.deletes) {
      upserts.delete(key);
      deletes.add(key);
    }
    for (const r of chunk.upserts) {
      const u = this.#parse(r);
      deletes.delete(u.key);
      upserts.set(u.key, u);
    }
    if (upserts.size + deletes.size > this.#limit) {
      throw new ResourceExhaustedError(`${this.#what}: one diff holds more than ${this.#limit} objects`);
    }
    if (!chunk.last) return undefined;
    const sortKey = (a: string, b: string) => a < b ? -1 : a > b ? 1 : 0;
    const diff = {
      upserts: [...upserts.values()].sort((a, b) => sortKey(a.key, b.key)),
      deletes: [...deletes].sort(sortKey),
    };
    this.#lastDone = g;
    this.#generation = undefined;
    this.#upserts = undefined;
    this.#deletes = undefined;
    return { generation: g, diff, partial: chunk.partial === true };
  }
}

/** Collects a chunked diff of whole objects (desired state, or discovery from any agent). */
export class DiffAssembler extends ChunkAssembler<VersionedUpsert> {
  /** `maxObjects` bounds what one pending diff may hold. */
  constructor(what: string, maxObjects: number) {
    super(what, maxObjects, fromResource);
  }
}

/**
 * Collects a chunked discovery push for a server that told the agent (Welcome) that the version of an
 * object suffices wherever `versionsSuffice(key)`: there an empty `object_json` is the version alone,
 * with a well-formed key; everywhere else objects must come whole.
 */
export class DiscoveryAssembler extends ChunkAssembler<DiscoveredUpsert> {
  constructor(maxObjects: number, versionsSuffice: (key: ObjectKey) => boolean) {
    super(
      "discovery",
      maxObjects,
      (r) => r.objectJson.byteLength === 0 && versionsSuffice(r.key) ? versionOnly(r) : fromResource(r),
    );
  }
}

/** Longest version accepted alone: ours are 32 hex digits; this leaves room for another hash. */
const MAX_VERSION_CHARS = 128;

function versionOnly(r: Resource): DiscoveredUpsert {
  const name = JSON.stringify(r.key.slice(0, 200));
  const parts = r.key.split("|");
  if (parts.length !== 4 || parts[0] === "" || parts[1] === "" || parts[3] === "") {
    throw new InvalidInputError(`object ${name}: not a key of the form apiVersion|kind|namespace|name`);
  }
  if (r.version === "" || r.version.length > MAX_VERSION_CHARS) {
    throw new InvalidInputError(
      `object ${name}: a version alone must have 1 to ${MAX_VERSION_CHARS} characters`,
    );
  }
  return { key: r.key, version: r.version };
}

/** Longest status message sent, in characters: a status names a problem, it does not carry a log. */
export const MAX_STATUS_MESSAGE_CHARS = 1024;

const STATES = new Set<string>(["applied", "pruned", "failed"]);

function statusWireSize(s: WireObjectStatus): number {
  return lenField(lenField(strBytes(s.key)) + lenField(strBytes(s.state)) + lenField(strBytes(s.message)));
}

/** An agent's per-object statuses for one generation, chunked: every message but the last has `more = true`. */
export function statusMessages(
  generation: number,
  statuses: readonly ObjectStatus[],
  maxBytes: number,
): AgentMessage[] {
  const wire = statuses.map((x): WireObjectStatus => ({
    key: x.key,
    state: x.state,
    message: (x.message ?? "").length > MAX_STATUS_MESSAGE_CHARS
      ? `${x.message!.slice(0, MAX_STATUS_MESSAGE_CHARS - 1)}…`
      : x.message ?? "",
  }));
  const groups = chunkBySize(wire, maxBytes, statusWireSize, {
    baseBytes: ENVELOPE_BYTES,
    fillBytes: SYNC_FILL_BYTES,
    describe: (x) => `status of ${JSON.stringify(x.key.slice(0, 200))}`,
  });
  if (groups.length === 0) groups.push([]);
  return groups.map((g, i) => ({ status: { generation, statuses: g, more: i < groups.length - 1 } }));
}

/** Collects the chunks of a status report; returns it complete on the message without `more`. */
export class StatusAssembler {
  #generation: number | undefined;
  #statuses: ObjectStatus[] = [];
  #limit: number;

  /** `maxEntries` bounds what one pending report may hold. */
  constructor(maxEntries: number) {
    this.#limit = maxEntries;
  }

  add(
    report: { generation: number; statuses: readonly WireObjectStatus[]; more: boolean },
  ): { generation: number; statuses: ObjectStatus[] } | undefined {
    if (this.#generation !== undefined && report.generation !== this.#generation) {
      throw new InvalidInputError(
        `status report for generation ${report.generation} started before the one for ${this.#generation} was complete`,
      );
    }
    this.#generation = report.generation;
    for (const x of report.statuses) {
      if (!STATES.has(x.state)) {
        throw new InvalidInputError(
          `status state ${JSON.stringify(x.state.slice(0, 40))} is not applied, pruned or failed`,
        );
      }
      this.#statuses.push({
        key: x.key,
        state: x.state as ObjectStatus["state"],
        ...(x.message ? { message: x.message.slice(0, MAX_STATUS_MESSAGE_CHARS) } : {}),
      });
    }
    if (this.#statuses.length > this.#limit) {
      throw new ResourceExhaustedError(`a status report holds more than ${this.#limit} objects`);
    }
    if (report.more) return undefined;
    const out = { generation: report.generation, statuses: this.#statuses };
    this.#generation = undefined;
    this.#statuses = [];
    return out;
  }
}
