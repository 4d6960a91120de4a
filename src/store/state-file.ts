/**
 * The block-state file of a block file: 8-byte magic "LAZYFSB1", float64 LE current size,
 * then one byte per block (0 absent, 1 present = equal to the origin, 2 dirty = written here,
 * never overwritten from the origin). Reading it, and making a new one.
 */
import type { FileHandle } from "node:fs/promises";
import { UserError } from "../common/errors.js";

export const ABSENT = 0;
export const PRESENT = 1;
export const DIRTY = 2;
export type BlockState = typeof ABSENT | typeof PRESENT | typeof DIRTY;

const MAGIC = Buffer.from("LAZYFSB1");
export const HEADER = 16;

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** One positional write of all of `bytes` (a regular file may take fewer bytes at once). */
export async function writeAll(fh: FileHandle, bytes: Buffer, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Reads a block-state file's bytes without opening it for writing (another process may own
 * it): the recorded size and one state per block. Undefined when it is not a state file.
 */
export function parseBlockStates(
  buf: Buffer,
  blockSize: number,
): { size: number; states: Uint8Array } | undefined {
  if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC)) return undefined;
  const size = buf.readDoubleLE(8);
  const states = new Uint8Array(blockCount(size, blockSize));
  states.set(buf.subarray(HEADER, HEADER + states.length));
  for (let i = 0; i < states.length; i++) if (states[i]! > DIRTY) states[i] = ABSENT;
  return { size, states };
}

/**
 * The size and states `state` (open read-write) records; a new (empty) one is made for `size`
 * bytes, all blocks absent (`created`).
 */
export async function loadStateFile(
  state: FileHandle,
  statePath: string,
  size: number,
  blockSize: number,
): Promise<{ size: number; states: Uint8Array; created: boolean }> {
  const st = await state.stat();
  if (st.size < HEADER) {
    // Every state byte written now, not left a hole: recording a block's state later then
    // never needs space (the cache's disk may be full by then).
    const header = Buffer.alloc(HEADER + blockCount(size, blockSize));
    MAGIC.copy(header, 0);
    header.writeDoubleLE(size, 8);
    await state.truncate(0);
    await writeAll(state, header, 0);
    await state.datasync();
    return { size, states: new Uint8Array(blockCount(size, blockSize)), created: true };
  }
  const buf = Buffer.alloc(st.size);
  await state.read(buf, 0, st.size, 0);
  const parsed = parseBlockStates(buf, blockSize);
  if (!parsed) throw new UserError(`store: ${statePath} is not a LazyFS block-state file`);
  return { ...parsed, created: false };
}
