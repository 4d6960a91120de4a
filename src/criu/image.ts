/**
 * CRIU image files: `MAGIC { SIZE PAYLOAD [EXTRA] }`, where MAGIC is the common (or service)
 * magic followed by the image's own magic (inventory.img has only its own), SIZE a 32-bit
 * little-endian payload length, PAYLOAD one protobuf message and EXTRA a blob whose length
 * the payload tells. Raw images (pages-*.img, ...) have no magic at all.
 *
 * A parsed image keeps every byte it was read from, so `encodeImage(parseImage(b))` is `b`.
 * Entries whose `payload` was replaced (see rewrite.ts) are re-emitted with a new SIZE.
 */
import { basename } from "node:path";
import { readRegularFile } from "../common/bounded-read.js";
import { errorMessage, UserError } from "../common/errors.js";
import { MAX_IMAGE_BYTES, MAX_IMAGE_ENTRIES } from "./limits.js";
import {
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  type ImageKind,
  INVENTORY_MAGIC,
  isRawImageName,
  kindByMagic,
  kindByName,
} from "./magic.js";
import { decodeMessage } from "./schema.js";
import { parseFields, WireError } from "./wire.js";

export interface ImageEntry {
  /** Byte offset of the entry's SIZE word in the file it was read from. */
  offset: number;
  payload: Uint8Array;
  /** Extra payload that follows the entry (pipe data, socket queues, ghost chunks, ...). */
  extra?: Uint8Array;
}

export interface CriuImage {
  /** Path it was read from (for error messages). */
  file: string;
  /** `entries`: framed protobuf entries; `raw`: no magic; `opaque`: a magic we do not know. */
  layout: "entries" | "raw" | "opaque";
  kind?: ImageKind;
  /** The magic word(s) exactly as read (empty for raw images). */
  header: Uint8Array;
  entries: ImageEntry[];
  /** Bytes after the last entry that belong to none (ghost file contents), or the whole body of
   * a raw or opaque image. */
  tail: Uint8Array;
}

/** A malformed image: one line naming the file and the byte offset. */
export class ImageError extends UserError {
  constructor(
    readonly file: string,
    readonly offset: number,
    problem: string,
  ) {
    super(`${file}: ${problem} at byte ${offset}`);
  }
}

const u32 = (b: Uint8Array, at: number) =>
  Buffer.from(b.buffer, b.byteOffset, b.length).readUInt32LE(at);
const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;

/** Parse the bytes of one image file. `file` names it in errors and decides raw images. */
export function parseImage(bytes: Uint8Array, file: string): CriuImage {
  if (isRawImageName(basename(file))) {
    return { file, layout: "raw", header: new Uint8Array(0), entries: [], tail: bytes };
  }
  if (bytes.length === 0) throw new ImageError(file, 0, "empty file, not a CRIU image");
  if (bytes.length < 4) throw new ImageError(file, 0, "file too short for a CRIU magic");
  let magic = u32(bytes, 0);
  let headerLength = 4;
  if (magic === IMG_COMMON_MAGIC || magic === IMG_SERVICE_MAGIC) {
    if (bytes.length < 8) throw new ImageError(file, 4, "truncated magic");
    magic = u32(bytes, 4);
    headerLength = 8;
  } else if (magic !== INVENTORY_MAGIC) {
    throw new ImageError(file, 0, `not a CRIU image (magic ${hex(magic)})`);
  }
  const header = bytes.subarray(0, headerLength);
  const kind = kindByMagic(magic);
  if (!kind) {
    return { file, layout: "opaque", header, entries: [], tail: bytes.subarray(headerLength) };
  }
  const image: CriuImage = { file, layout: "entries", kind, header, entries: [], tail: bytes };
  let pos = headerLength;
  const ghost = kind.name === "GHOST_FILE";
  while (pos < bytes.length) {
    if (ghost && image.entries.length === 1 && !ghostHasChunks(image)) break;
    if (pos + 4 > bytes.length) {
      throw new ImageError(file, pos, `truncated entry size (${bytes.length - pos} of 4 bytes)`);
    }
    if (image.entries.length >= MAX_IMAGE_ENTRIES) {
      throw new ImageError(file, pos, `more than ${MAX_IMAGE_ENTRIES} entries (MAX_IMAGE_ENTRIES)`);
    }
    const size = u32(bytes, pos);
    if (pos + 4 + size > bytes.length) {
      throw new ImageError(
        file,
        pos,
        `entry length ${size} past end of file (${bytes.length - pos - 4} bytes left)`,
      );
    }
    const entry: ImageEntry = { offset: pos, payload: bytes.subarray(pos + 4, pos + 4 + size) };
    pos += 4 + size;
    const extraLength = extraOf(image, entry, bytes, pos);
    if (extraLength > 0) {
      if (pos + extraLength > bytes.length) {
        throw new ImageError(
          file,
          pos,
          `extra payload of ${extraLength} bytes past end of file (${bytes.length - pos} left)`,
        );
      }
      entry.extra = bytes.subarray(pos, pos + extraLength);
      pos += extraLength;
    }
    image.entries.push(entry);
  }
  image.tail = bytes.subarray(pos);
  return image;
}

function ghostHasChunks(image: CriuImage): boolean {
  const first = image.entries[0]!;
  return wireCheck(image, first, () => {
    for (const f of parseFields(first.payload)) if (f.number === 9) return f.varint === 1n;
    return false;
  });
}

function extraOf(image: CriuImage, entry: ImageEntry, bytes: Uint8Array, pos: number): number {
  if (image.kind?.name === "GHOST_FILE") {
    // After the ghost_file_entry, chunked ghosts are (ghost_chunk_entry, `len` bytes) pairs.
    if (image.entries.length === 0) return 0;
    return wireCheck(image, entry, () => {
      for (const f of parseFields(entry.payload)) if (f.number === 1) return Number(f.varint);
      return 0;
    });
  }
  const extra = image.kind?.extra;
  return extra ? wireCheck(image, entry, () => extra(entry.payload, bytes, pos)) : 0;
}

/** Run `fn` on an entry's payload, turning wire errors into an ImageError with the offset. */
function wireCheck<T>(image: CriuImage, entry: ImageEntry, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof WireError) {
      throw new ImageError(
        image.file,
        entry.offset + 4 + err.offset,
        `malformed protobuf (${err.message})`,
      );
    }
    throw err;
  }
}

/** The bytes of an image: header, entries (with fresh SIZE words), tail. */
export function encodeImage(image: CriuImage): Uint8Array {
  const parts: Uint8Array[] = [image.header];
  for (const entry of image.entries) {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(entry.payload.length);
    parts.push(size, entry.payload);
    if (entry.extra) parts.push(entry.extra);
  }
  parts.push(image.tail);
  return Buffer.concat(parts);
}

/**
 * Read and parse one image file: a regular file of at most MAX_IMAGE_BYTES (a FIFO, a device
 * or a larger file is refused); a missing or unreadable file is a UserError.
 */
export async function readImage(path: string): Promise<CriuImage> {
  const bytes = await readRegularFile(path, MAX_IMAGE_BYTES, "image file");
  return parseImage(bytes, path);
}

/** Check that `image` is of kind `name` (e.g. "FILES"), else an error naming the magic. */
export function expectKind(image: CriuImage, name: string): void {
  const want = kindByName(name);
  if (image.kind?.name === name) return;
  const found =
    image.layout === "opaque" ? `unknown magic ${hex(u32(image.header, 4))}` : image.kind?.name;
  throw new ImageError(
    image.file,
    image.header.length >= 8 ? 4 : 0,
    `expected a ${want.name} image (magic ${hex(want.magic)}), found ${found ?? image.layout}`,
  );
}

/** Decode entry `index` with the message type the table gives for its image. */
export function decodeEntry(image: CriuImage, index: number): Record<string, unknown> {
  const entry = image.entries[index];
  const kind = image.kind;
  const message = index === 0 && kind?.headMessage ? kind.headMessage : kind?.message;
  if (!entry || !message) {
    throw new Error(`${image.file}: entry ${index} has no decodable message`);
  }
  wireCheck(image, entry, () => parseFields(entry.payload));
  try {
    return decodeMessage(message, entry.payload);
  } catch (err) {
    throw new ImageError(
      image.file,
      entry.offset,
      `invalid ${message} entry (${errorMessage(err)})`,
    );
  }
}

/** Decode every entry of an image. */
export function decodeEntries(image: CriuImage): Record<string, unknown>[] {
  return image.entries.map((_, i) => decodeEntry(image, i));
}
