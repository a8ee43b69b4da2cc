import { assertEquals, assertThrows } from "../testing/assert.ts";
import {
  ecdsaSignatureToDer,
  namedBits,
  oid,
  readTlv,
  sequence,
  smallInteger,
  subjectPublicKeyBits,
  time,
  tlv,
  unsignedInteger,
} from "./der.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const bytes = (h: string) => new Uint8Array(h.match(/../g)?.map((x) => parseInt(x, 16)) ?? []);

Deno.test("DER writer encodes what X.690 DER says", async (t) => {
  const cases: { name: string; got: () => Uint8Array; want: string }[] = [
    { name: "short length", got: () => tlv(0x04, bytes("0102")), want: "04020102" },
    { name: "length 127", got: () => tlv(0x04, new Uint8Array(127)), want: "047f" + "00".repeat(127) },
    { name: "length 128", got: () => tlv(0x04, new Uint8Array(128)), want: "048180" + "00".repeat(128) },
    { name: "length 256", got: () => tlv(0x04, new Uint8Array(256)), want: "04820100" + "00".repeat(256) },
    { name: "empty sequence", got: () => sequence(), want: "3000" },
    { name: "oid ecdsa-with-SHA256", got: () => oid("1.2.840.10045.4.3.2"), want: "06082a8648ce3d040302" },
    { name: "oid clientAuth", got: () => oid("1.3.6.1.5.5.7.3.2"), want: "06082b06010505070302" },
    { name: "oid Ed25519", got: () => oid("1.3.101.112"), want: "06032b6570" },
    { name: "integer 0", got: () => smallInteger(0), want: "020100" },
    { name: "integer 127", got: () => smallInteger(127), want: "02017f" },
    { name: "integer 128 gets a leading zero", got: () => smallInteger(128), want: "02020080" },
    { name: "integer 256", got: () => smallInteger(256), want: "02020100" },
    { name: "magnitude: leading zeros dropped", got: () => unsignedInteger(bytes("000001")), want: "020101" },
    { name: "magnitude: all zero", got: () => unsignedInteger(bytes("0000")), want: "020100" },
    { name: "magnitude: high bit", got: () => unsignedInteger(bytes("00ff")), want: "020200ff" },
    { name: "key usage digitalSignature", got: () => namedBits(1), want: "03020780" },
    { name: "key usage digitalSignature+keyEncipherment", got: () => namedBits(1 | 4), want: "030205a0" },
    { name: "key usage keyCertSign+cRLSign", got: () => namedBits(32 | 64), want: "03020106" },
    { name: "key usage with digitalSignature", got: () => namedBits(1 | 32 | 64), want: "03020186" },
    { name: "key usage decipherOnly (bit 8)", got: () => namedBits(256), want: "0303070080" },
    { name: "no bits", got: () => namedBits(0), want: "030100" },
    {
      name: "UTCTime up to 2049",
      got: () => time(new Date("2049-12-31T23:59:59Z")),
      want: hex(new TextEncoder().encode("491231235959Z")).replace(/^/, "170d"),
    },
    {
      name: "GeneralizedTime from 2050",
      got: () => time(new Date("2050-01-01T00:00:00Z")),
      want: "180f" + hex(new TextEncoder().encode("20500101000000Z")),
    },
    {
      name: "GeneralizedTime before 1950",
      got: () => time(new Date("1949-12-31T23:59:59Z")),
      want: "180f" + hex(new TextEncoder().encode("19491231235959Z")),
    },
    {
      name: "ECDSA r‖s → SEQUENCE of minimal INTEGERs",
      got: () => ecdsaSignatureToDer(bytes("00000001" + "80000000")),
      want: "300a02010102050080000000",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => assertEquals(hex(c.got()), c.want));
  }
  await t.step("refuses what it cannot encode", () => {
    assertThrows(() => oid("1"), RangeError);
    assertThrows(() => oid("3.1"), RangeError);
    assertThrows(() => smallInteger(-1), RangeError);
    assertThrows(() => namedBits(-1), RangeError);
    assertThrows(() => time(new Date("+010000-01-01T00:00:00Z")), RangeError);
    assertThrows(() => ecdsaSignatureToDer(new Uint8Array(3)), RangeError);
  });
});

Deno.test("DER reader is strict", async (t) => {
  const cases: { name: string; der: string; want: ReturnType<typeof readTlv> }[] = [
    { name: "short form", der: "0402aabb", want: { tag: 4, start: 2, end: 4 } },
    { name: "long form", der: "048180" + "00".repeat(128), want: { tag: 4, start: 3, end: 131 } },
    { name: "long form for a short length", der: "04810100", want: undefined },
    { name: "leading zero length byte", der: "0482000100", want: undefined },
    { name: "indefinite length", der: "30800000", want: undefined },
    { name: "runs past the end", der: "0403aabb", want: undefined },
    { name: "multi-byte tag", der: "1f0100", want: undefined },
    { name: "truncated header", der: "04", want: undefined },
  ];
  for (const c of cases) {
    await t.step(c.name, () => assertEquals(readTlv(bytes(c.der), 0), c.want));
  }
  await t.step("subjectPublicKeyBits takes the BIT STRING after the algorithm", async () => {
    const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair;
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", kp.publicKey));
    const raw = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
    assertEquals(subjectPublicKeyBits(spki), raw);
    assertEquals(subjectPublicKeyBits(spki.subarray(0, spki.length - 1)), undefined);
    assertEquals(subjectPublicKeyBits(new Uint8Array([...spki, 0])), undefined);
  });
});
