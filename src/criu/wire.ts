/**
 * Protobuf wire format at the byte level: walk the fields of one encoded message keeping each
 * field's exact bytes, and splice new values into a message while every other field (known to
 * our schema or not) is re-emitted byte for byte. This is what makes an edited CRIU image
 * differ from the original only in the fields that were changed.
 */

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_BYTES = 2;
export const WIRE_FIXED32 = 5;

/** One field of an encoded message; `start..end` covers tag and value, `value*` the value. */
export interface WireField {
  number: number;
  wireType: number;
  start: number;
  end: number;
  valueStart: number;
  valueEnd: number;
  /** For varint fields, the value (exact up to 2^64 - 1). */
  varint?: bigint;
}

/** Thrown for bytes that are not a well-formed protobuf message; `offset` is within `buf`. */
export class WireError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = "WireError";
  }
}

function readVarint(buf: Uint8Array, pos: number): { value: bigint; next: number } {
  let value = 0n;
  let shift = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= buf.length) throw new WireError("truncated varint", pos);
    const b = buf[pos + i]!;
    value |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return { value: value & 0xffff_ffff_ffff_ffffn, next: pos + i + 1 };
    shift += 7n;
  }
  throw new WireError("varint longer than 10 bytes", pos);
}

/** Parse every field of a message; throws WireError on malformed input. */
export function parseFields(buf: Uint8Array): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const tag = readVarint(buf, pos);
    pos = tag.next;
    const number = Number(tag.value >> 3n);
    const wireType = Number(tag.value & 7n);
    if (number === 0) throw new WireError("field number 0", start);
    let valueStart = pos;
    let varint: bigint | undefined;
    switch (wireType) {
      case WIRE_VARINT: {
        const v = readVarint(buf, pos);
        varint = v.value;
        pos = v.next;
        break;
      }
      case WIRE_FIXED64:
        pos += 8;
        break;
      case WIRE_FIXED32:
        pos += 4;
        break;
      case WIRE_BYTES: {
        const len = readVarint(buf, pos);
        if (len.value > BigInt(buf.length)) throw new WireError("length past end", pos);
        valueStart = len.next;
        pos = len.next + Number(len.value);
        break;
      }
      default:
        throw new WireError(`invalid wire type ${wireType}`, start);
    }
    if (pos > buf.length) throw new WireError("field past end of message", start);
    const field: WireField = { number, wireType, start, end: pos, valueStart, valueEnd: pos };
    if (varint !== undefined) field.varint = varint;
    fields.push(field);
  }
  return fields;
}

/** Value of the last varint field `number` (protobuf's "last one wins"), if present. */
export function varintField(buf: Uint8Array, number: number): bigint | undefined {
  let found: bigint | undefined;
  for (const f of parseFields(buf)) {
    if (f.number === number && f.varint !== undefined) found = f.varint;
  }
  return found;
}

export function encodeVarint(value: number | bigint): Uint8Array {
  let v = BigInt(value);
  if (v < 0n) v &= 0xffff_ffff_ffff_ffffn;
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return Uint8Array.from(out);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

/** Encode one length-delimited field (bytes, string, or nested message). */
export function encodeBytesField(number: number, value: Uint8Array): Uint8Array {
  return concat([encodeVarint((number << 3) | WIRE_BYTES), encodeVarint(value.length), value]);
}

/**
 * Replace the value of length-delimited field `number` by `update(oldValue)`: every occurrence
 * is rewritten (protobuf merges repeated occurrences of a singular field, so all must agree);
 * other fields keep their bytes and order. Returns the input itself when nothing changed.
 */
export function spliceBytesField(
  msg: Uint8Array,
  number: number,
  update: (old: Uint8Array) => Uint8Array,
): Uint8Array {
  const parts: Uint8Array[] = [];
  let changed = false;
  let last = 0;
  for (const f of parseFields(msg)) {
    if (f.number !== number || f.wireType !== WIRE_BYTES) continue;
    const old = msg.subarray(f.valueStart, f.valueEnd);
    const next = update(old);
    if (next === old || Buffer.compare(next, old) === 0) continue;
    parts.push(msg.subarray(last, f.start), encodeBytesField(number, next));
    last = f.end;
    changed = true;
  }
  if (!changed) return msg;
  parts.push(msg.subarray(last));
  return concat(parts);
}

/** Remove every occurrence of field `number`; other fields keep their bytes and order. */
export function removeField(msg: Uint8Array, number: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let last = 0;
  for (const f of parseFields(msg)) {
    if (f.number !== number) continue;
    parts.push(msg.subarray(last, f.start));
    last = f.end;
  }
  if (last === 0) return msg;
  parts.push(msg.subarray(last));
  return concat(parts);
}
