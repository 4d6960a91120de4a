/**
 * An SSH server written in the test (ssh2's Server): SFTP over this host's own file system
 * (read-only: open, read, fstat, stat, lstat, opendir/readdir, realpath, readlink) and `exec`
 * through `sh -c`, accepting any public key. `fakeEntries` lets it lie in a directory listing
 * (the malicious origin: an image named `../../x` in the dump directory). It counts the
 * connections it saw, so a test can tell that a client gave up before connecting at all.
 */
import { spawn } from "node:child_process";
import { type Stats, statSync } from "node:fs";
import { lstat, open, readdir, readlink, realpath, stat } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import ssh2 from "ssh2";

const { Server, utils } = ssh2;
const { STATUS_CODE, OPEN_MODE } = utils.sftp;

export interface FakeEntry {
  name: string;
  size: number;
}

export interface TestSshServer {
  port: number;
  /** Connections accepted so far. */
  connections: number;
  /** Paths opened for reading through SFTP. */
  opened: string[];
  close(): Promise<void>;
}

function attrsOf(st: Stats) {
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    atime: Math.floor(st.atimeMs / 1000),
    mtime: Math.floor(st.mtimeMs / 1000),
  };
}

export async function startSshServer(
  opts: { fakeEntries?: Record<string, FakeEntry[]> } = {},
): Promise<TestSshServer> {
  const hostKey = utils.generateKeyPairSync("ed25519").private;
  const state = { connections: 0, opened: [] as string[] };
  const server = new Server({ hostKeys: [hostKey] }, (client) => {
    state.connections++;
    client.on("error", () => {});
    client.on("authentication", (ctx) => {
      if (ctx.method === "publickey") ctx.accept();
      else ctx.reject(["publickey"]);
    });
    client.on("ready", () => {
      client.on("session", (acceptSession) => {
        const session = acceptSession();
        session.on("exec", (accept, _reject, info) => {
          const ch = accept();
          const p = spawn("sh", ["-c", info.command], { stdio: ["pipe", "pipe", "pipe"] });
          ch.pipe(p.stdin).on("error", () => {});
          p.stdout.pipe(ch, { end: false });
          p.stderr.pipe(ch.stderr, { end: false });
          p.on("close", (code) => {
            ch.exit(code ?? 1);
            ch.end();
          });
        });
        session.on("sftp", (acceptSftp) => serveSftp(acceptSftp(), opts.fakeEntries ?? {}, state));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    get connections() {
      return state.connections;
    },
    get opened() {
      return state.opened;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: ssh2's SFTP server stream is untyped here
function serveSftp(sftp: any, fake: Record<string, FakeEntry[]>, state: { opened: string[] }) {
  const handles = new Map<
    number,
    { fd?: Awaited<ReturnType<typeof open>>; dir?: string; listed?: boolean }
  >();
  let next = 0;
  const handle = (h: Buffer) => handles.get(h.readUInt32BE(0));
  const newHandle = (v: { fd?: Awaited<ReturnType<typeof open>>; dir?: string }) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(next);
    handles.set(next++, v);
    return b;
  };
  const fail = (reqid: number, err: unknown) =>
    sftp.status(
      reqid,
      (err as { code?: string }).code === "ENOENT" ? STATUS_CODE.NO_SUCH_FILE : STATUS_CODE.FAILURE,
    );
  const statReq = (fn: (p: string) => Promise<Stats>) => async (reqid: number, path: string) => {
    try {
      sftp.attrs(reqid, attrsOf(await fn(path)));
    } catch (err) {
      fail(reqid, err);
    }
  };
  sftp.on("STAT", statReq(stat));
  sftp.on("LSTAT", statReq(lstat));
  sftp.on("OPEN", async (reqid: number, path: string, flags: number) => {
    if (flags & OPEN_MODE.WRITE) return sftp.status(reqid, STATUS_CODE.PERMISSION_DENIED);
    try {
      const fd = await open(path, "r");
      state.opened.push(path);
      sftp.handle(reqid, newHandle({ fd }));
    } catch (err) {
      fail(reqid, err);
    }
  });
  sftp.on("READ", async (reqid: number, h: Buffer, offset: number, length: number) => {
    const f = handle(h)?.fd;
    if (!f) return sftp.status(reqid, STATUS_CODE.FAILURE);
    const buf = Buffer.alloc(length);
    const { bytesRead } = await f.read(buf, 0, length, offset);
    if (bytesRead === 0) return sftp.status(reqid, STATUS_CODE.EOF);
    sftp.data(reqid, buf.subarray(0, bytesRead));
  });
  sftp.on("FSTAT", async (reqid: number, h: Buffer) => {
    const f = handle(h)?.fd;
    if (!f) return sftp.status(reqid, STATUS_CODE.FAILURE);
    sftp.attrs(reqid, attrsOf(await f.stat()));
  });
  sftp.on("OPENDIR", async (reqid: number, path: string) => {
    try {
      if (!(await stat(path)).isDirectory()) throw Object.assign(new Error(), { code: "ENOTDIR" });
      sftp.handle(reqid, newHandle({ dir: path }));
    } catch (err) {
      fail(reqid, err);
    }
  });
  sftp.on("READDIR", async (reqid: number, h: Buffer) => {
    const d = handle(h);
    if (!d?.dir) return sftp.status(reqid, STATUS_CODE.FAILURE);
    if (d.listed) return sftp.status(reqid, STATUS_CODE.EOF);
    d.listed = true;
    const names = [];
    for (const name of await readdir(d.dir)) {
      const st = statSync(join(d.dir, name), { throwIfNoEntry: false });
      if (st) names.push({ filename: name, longname: name, attrs: attrsOf(st) });
    }
    for (const e of fake[d.dir] ?? []) {
      names.push({
        filename: e.name,
        longname: e.name,
        attrs: { mode: 0o100600, uid: 0, gid: 0, size: e.size, atime: 0, mtime: 0 },
      });
    }
    sftp.name(reqid, names);
  });
  sftp.on("CLOSE", async (reqid: number, h: Buffer) => {
    const n = h.readUInt32BE(0);
    await handles.get(n)?.fd?.close();
    handles.delete(n);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  sftp.on("REALPATH", async (reqid: number, path: string) => {
    try {
      const p = await realpath(path === "." ? "/" : path);
      sftp.name(reqid, [{ filename: p, longname: p, attrs: {} }]);
    } catch (err) {
      fail(reqid, err);
    }
  });
  sftp.on("READLINK", async (reqid: number, path: string) => {
    try {
      const p = await readlink(path);
      sftp.name(reqid, [{ filename: p, longname: p, attrs: {} }]);
    } catch (err) {
      fail(reqid, err);
    }
  });
}
