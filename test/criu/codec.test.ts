/**
 * Pure codec pieces (wire splice, extra payloads, ghost files, flag text) and the CRIU locator
 * against the real binary and fake candidates.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { UserError } from "../../src/common/errors.js";
import {
  compareVersions,
  criuVersionProblem,
  decodeEntry,
  encodeImage,
  encodeMessage,
  IMG_COMMON_MAGIC,
  kindByName,
  locateCriu,
  MIN_CRIU_VERSION,
  openFlagsText,
  PRIVATE_CRIU,
  parseImage,
  rewriteImage,
} from "../../src/criu/index.js";
import {
  encodeBytesField,
  encodeVarint,
  parseFields,
  spliceBytesField,
} from "../../src/criu/wire.js";

function image(kind: string, entries: Uint8Array[], extras: Uint8Array[] = []): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32LE(IMG_COMMON_MAGIC, 0);
  header.writeUInt32LE(kindByName(kind).magic, 4);
  const parts: Uint8Array[] = [header];
  entries.forEach((e, i) => {
    const size = Buffer.alloc(4);
    size.writeUInt32LE(e.length);
    parts.push(size, e);
    if (extras[i]) parts.push(extras[i]!);
  });
  return Buffer.concat(parts);
}

describe("codec", () => {
  const tmp = mkdtempSync(join(tmpdir(), "lazyfs-criu-codec-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("renaming keeps unknown fields and field order byte for byte", () => {
    const reg = encodeMessage("reg_file_entry", {
      id: 7,
      flags: 0o100000,
      pos: 12,
      fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 },
      name: "/old/path",
      size: 4096,
      mode: 0o100644,
    });
    const unknown = Buffer.concat([encodeVarint((99 << 3) | 0), encodeVarint(12345)]);
    const regWithUnknown = Buffer.concat([reg, unknown]);
    const file = Buffer.concat([
      encodeVarint((1 << 3) | 0),
      encodeVarint(1),
      encodeVarint((2 << 3) | 0),
      encodeVarint(7),
      encodeBytesField(3, regWithUnknown),
      encodeBytesField(200, Buffer.from("future field")),
    ]);
    const bytes = image("FILES", [file]);
    const parsed = parseImage(bytes, "files.img");
    assert.deepEqual(Buffer.from(encodeImage(parsed)), bytes);
    const changes = rewriteImage(parsed, (p) =>
      p === "/old/path" ? "/new/longer/path" : undefined,
    );
    assert.deepEqual(changes, [
      { image: "files.img", id: 7, from: "/old/path", to: "/new/longer/path" },
    ]);
    const out = Buffer.from(encodeImage(parsed));
    const again = parseImage(out, "files.img");
    const entry = decodeEntry(again, 0) as { reg: Record<string, unknown> };
    assert.equal(entry.reg.name, "/new/longer/path");
    assert.equal(entry.reg.size, 4096);
    assert.equal(entry.reg.pos, 12);
    // Unknown fields survive at both levels, in place.
    const outer = parseFields(again.entries[0]!.payload);
    assert.deepEqual(
      outer.map((f) => f.number),
      [1, 2, 3, 200],
    );
    const inner = again.entries[0]!.payload.subarray(outer[2]!.valueStart, outer[2]!.valueEnd);
    assert.ok(Buffer.from(inner).subarray(-unknown.length).equals(unknown));
    assert.deepEqual(
      Buffer.from(spliceBytesField(inner, 6, () => Buffer.from("/old/path"))),
      regWithUnknown,
    );
  });

  test("extra payloads: pipe data and chunked / plain ghost files", () => {
    const pipeData = (n: number) =>
      Buffer.concat([encodeVarint(8), encodeVarint(3), encodeVarint(16), encodeVarint(n)]);
    const bytes = image(
      "PIPES_DATA",
      [pipeData(5), pipeData(0), pipeData(2)],
      [Buffer.from("hello"), Buffer.alloc(0), Buffer.from("!!")],
    );
    const parsed = parseImage(bytes, "pipes-data.img");
    assert.deepEqual(
      parsed.entries.map((e) => Buffer.from(e.extra ?? []).toString()),
      ["hello", "", "!!"],
    );
    assert.deepEqual(Buffer.from(encodeImage(parsed)), bytes);

    const ghost = (chunks: boolean) =>
      encodeMessage("ghost_file_entry", { uid: 1, gid: 2, mode: 0o100600, chunks, size: 10 });
    const chunk = (len: number, off: number) =>
      Buffer.concat([encodeVarint(8), encodeVarint(len), encodeVarint(16), encodeVarint(off)]);
    const chunked = image(
      "GHOST_FILE",
      [ghost(true), chunk(3, 0), chunk(2, 8)],
      [Buffer.alloc(0), Buffer.from("abc"), Buffer.from("yz")],
    );
    const pc = parseImage(chunked, "ghost-file-1.img");
    assert.equal(pc.entries.length, 3);
    assert.equal(Buffer.from(pc.entries[2]!.extra!).toString(), "yz");
    assert.deepEqual(Buffer.from(encodeImage(pc)), chunked);
    const plain = Buffer.concat([image("GHOST_FILE", [ghost(false)]), Buffer.from("raw contents")]);
    const pp = parseImage(plain, "ghost-file-2.img");
    assert.equal(pp.entries.length, 1);
    assert.equal(Buffer.from(pp.tail).toString(), "raw contents");
    assert.deepEqual(Buffer.from(encodeImage(pp)), plain);
  });

  test("unknown magics and raw images are kept verbatim", () => {
    const unknown = Buffer.concat([image("FILES", []), Buffer.from([1, 2, 3])]);
    unknown.writeUInt32LE(0x12345678, 4);
    const u = parseImage(unknown, "future.img");
    assert.equal(u.layout, "opaque");
    assert.deepEqual(Buffer.from(encodeImage(u)), unknown);
    const raw = Buffer.from("no magic at all");
    const r = parseImage(raw, "pages-1.img");
    assert.equal(r.layout, "raw");
    assert.deepEqual(Buffer.from(encodeImage(r)), raw);
  });

  test("open flags as text", () => {
    assert.equal(openFlagsText(0o100000), "O_RDONLY|O_LARGEFILE");
    assert.equal(openFlagsText(0o102001), "O_WRONLY|O_APPEND|O_LARGEFILE");
    assert.equal(openFlagsText(0o4010002), "O_RDWR|O_SYNC");
    assert.equal(openFlagsText(0o10002), "O_RDWR|O_DSYNC");
  });

  test("CRIU versions compare as major.minor.patch; the minimum is 4.2", () => {
    assert.equal(MIN_CRIU_VERSION, "4.2");
    const ordered = ["3.17", "4", "4.1.1", "4.2", "4.2.1-1", "4.10", "1:5.0"];
    for (let i = 0; i + 1 < ordered.length; i++) {
      assert.ok(
        compareVersions(ordered[i]!, ordered[i + 1]!) < 0,
        `${ordered[i]} < ${ordered[i + 1]}`,
      );
      assert.ok(compareVersions(ordered[i + 1]!, ordered[i]!) > 0);
    }
    assert.equal(compareVersions("4.2", "4.2.0"), 0);
    assert.equal(criuVersionProblem("4.2.1"), undefined);
    assert.equal(
      criuVersionProblem("4.1.1"),
      "version 4.1.1 is older than 4.2 (cannot dump TCP sockets on Linux >= 6.16)",
    );
  });

  test("locating CRIU: option, environment, prefix, and errors naming what was tried", async () => {
    const found = await locateCriu({ env: { PATH: "" } });
    assert.equal(found.path, PRIVATE_CRIU);
    assert.equal(found.source, "prefix");
    assert.ok(compareVersions(found.version, "4.2") >= 0, found.version);

    const viaEnv = await locateCriu({ env: { LAZYFS_CRIU: PRIVATE_CRIU } });
    assert.equal(viaEnv.source, "env");

    const old = join(tmp, "old-criu");
    writeFileSync(old, "#!/bin/sh\necho 'Version: 4.1.1'\n");
    chmodSync(old, 0o755);
    await assert.rejects(locateCriu({ criuPath: old }), (err: unknown) => {
      assert.ok(err instanceof UserError);
      assert.equal(
        err.message,
        `no usable CRIU >= 4.2; tried ${old} (--criu): version 4.1.1 is older than 4.2 (cannot dump TCP sockets on Linux >= 6.16)`,
      );
      return true;
    });
    const missing = join(tmp, "nope");
    await assert.rejects(
      locateCriu({ env: { LAZYFS_CRIU: missing } }),
      new RegExp(`tried ${missing} \\(\\$LAZYFS_CRIU\\): not found or not executable$`),
    );
    const viaOption = await locateCriu({ criuPath: PRIVATE_CRIU, env: { LAZYFS_CRIU: missing } });
    assert.equal(viaOption.source, "option");
  });
});
