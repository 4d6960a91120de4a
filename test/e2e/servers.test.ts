/**
 * Real servers migrate: an HTTP server, a TCP echo server whose client on a third host keeps
 * its connection, Redis with AOF and a connected client, SQLite in WAL mode. The service
 * address moves from A to B with the process, as it does in live migration; each program's
 * own checks are the assertion.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type ClientHostPair, DATA_DIR } from "../../src/hosts/index.js";
import {
  type LazyfsOnB,
  linesIn,
  type Migrated,
  sleep,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";

let pair: ClientHostPair;
let lazyfs: LazyfsOnB;

const sha256 = (b: string | Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * `--on-restored` command for a migration whose service address must move: it tells the
 * test the process runs on B, and waits until the test has moved the address.
 */
const RESTORED_FLAG = `${DATA_DIR}/restored.flag`;
const MOVED_FLAG = `${DATA_DIR}/moved.flag`;
const WAIT_FOR_MOVE = `touch ${RESTORED_FLAG}; i=0; while [ ! -e ${MOVED_FLAG} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; [ -e ${MOVED_FLAG} ]`;

/** Migrates `pid` while moving the service address from A to B right after the restore. */
async function migrateWithAddress(pid: number, extra: string[]): Promise<Migrated> {
  await pair.b.exec("rm", ["-f", RESTORED_FLAG, MOVED_FLAG]);
  const migrating = lazyfs.migrate(pid, ["--on-restored", WAIT_FOR_MOVE, ...extra]);
  const restoredOrFailed = Promise.race([
    waitFor(
      "the restore on B",
      async () =>
        (await pair.b.exec("test", ["-e", RESTORED_FLAG], { allowFailure: true })).code === 0
          ? true
          : undefined,
      60_000,
    ),
    migrating.then(() => {
      throw new Error("migrate returned before the restore hook ran");
    }),
  ]);
  await restoredOrFailed;
  await pair.routeServiceTo(pair.b);
  await pair.removeServiceAddress(pair.a);
  await pair.b.exec("touch", [MOVED_FLAG]);
  return migrating;
}

describe("servers migrate and keep serving", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts({ client: true }));
  });
  after(() => stopHosts({ pair, lazyfs }));

  /** Service address on A (where C sends it) and on B (so that the restore can bind it). */
  async function serviceOnA(): Promise<string> {
    await pair.addServiceAddress(pair.a);
    await pair.addServiceAddress(pair.b);
    await pair.routeServiceTo(pair.a);
    return pair.serviceAddress;
  }

  async function serviceBackToA(): Promise<void> {
    await pair.removeServiceAddress(pair.b).catch(() => {});
    await pair.removeServiceAddress(pair.a).catch(() => {});
  }

  test("an HTTP server (python3 -m http.server) serves files that exist only on the origin, opened by name after the migration", async () => {
    const www = `${DATA_DIR}/www`;
    const blob = Buffer.alloc(1 << 20);
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 7919) & 0xff;
    // The site exists only on A: on B the server opens each file by name in its view of www.
    await pair.a.exec("mkdir", ["-p", www]);
    await pair.a.writeFile(`${www}/blob.bin`, blob);
    await pair.a.writeFile(`${www}/index.html`, "<h1>LazyFS</h1>\n");
    const s = await serviceOnA();
    const srv = await pair.a.startWorkload(
      "python3",
      ["-m", "http.server", "8080", "--bind", s, "--directory", www],
      { stdout: `${DATA_DIR}/http.log`, cwd: www },
    );
    const get = async (path: string) =>
      (
        await pair.c.exec("python3", [
          "-c",
          "import sys,urllib.request\nsys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1],timeout=10).read())",
          `http://${s}:8080${path}`,
        ])
      ).stdout;
    await waitFor("the server on A", async () =>
      (await get("/index.html").catch(() => "")) ? true : undefined,
    );
    const m = await lazyfs.migrate(srv.pid);
    try {
      assert.equal(m.originKept, "stopped");
      await pair.routeServiceTo(pair.b);
      await pair.removeServiceAddress(pair.a);
      const body = await pair.c.exec(
        "python3",
        [
          "-c",
          "import sys,urllib.request,hashlib\nprint(hashlib.sha256(urllib.request.urlopen(sys.argv[1],timeout=10).read()).hexdigest())",
          `http://${s}:8080/blob.bin`,
        ],
        { timeoutMs: 30_000 },
      );
      assert.equal(body.stdout.trim(), sha256(blob));
      assert.equal(await get("/index.html"), "<h1>LazyFS</h1>\n");
      // The original is gone from A.
      const onA = await pair.a.exec("kill", ["-0", String(srv.pid)], { allowFailure: true });
      assert.notEqual(onA.code, 0, "the original ended on A");
    } finally {
      await lazyfs.stop(m);
      await serviceBackToA();
    }
  });

  test("a TCP echo server keeps its client's established connection (--tcp-established)", async () => {
    const s = await serviceOnA();
    const server =
      "import socket,threading,sys\nl=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind((sys.argv[1],7000)); l.listen()\ndef serve(c):\n  while True:\n    d=c.recv(4096)\n    if not d: return\n    c.sendall(d)\nwhile True:\n  c,_=l.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()";
    const srv = await pair.a.startWorkload("python3", ["-c", server, s], {
      stdout: `${DATA_DIR}/echo.log`,
    });
    // One connection for the whole test; every line must come back, in order.
    const client =
      "import socket,sys,time,os\nfor t in range(100):\n  try: s=socket.create_connection((sys.argv[1],7000),timeout=2); break\n  except OSError: time.sleep(0.05)\ns.settimeout(60)\nf=s.makefile('rb')\ni=0\nwhile not os.path.exists(sys.argv[2]):\n  m=b'%d\\n' % i\n  s.sendall(m)\n  back=f.readline()\n  if back!=m:\n    print('mismatch',i,back,flush=True); sys.exit(1)\n  i+=1\n  if i%20==0: print('echoed',i,flush=True)\n  time.sleep(0.005)\nprint('ok',i,flush=True)";
    const stopFile = `${DATA_DIR}/echo.stop`;
    const out = `${DATA_DIR}/echo-client.txt`;
    const cl = await pair.c.startWorkload("python3", ["-c", client, s, stopFile], { stdout: out });
    const echoed = async () => {
      const l = await linesIn(pair.c, out);
      const last = l[l.length - 1] ?? "";
      assert.doesNotMatch(last, /mismatch/);
      return Number(last.split(" ")[1] ?? 0);
    };
    await waitFor("echoes on A", async () => ((await echoed()) >= 100 ? true : undefined));
    const m = await migrateWithAddress(srv.pid, ["--tcp-established"]);
    try {
      const atMigration = await echoed();
      await waitFor(
        "echoes from B",
        async () => ((await echoed()) >= atMigration + 200 ? true : undefined),
        30_000,
      );
      await pair.c.exec("touch", [stopFile]);
      assert.equal(await cl.exited, 0, "the client saw every echo, in order, on one connection");
      const last = (await linesIn(pair.c, out)).pop()!;
      assert.match(last, /^ok \d+$/);
      const onA = await pair.a.exec("kill", ["-0", String(srv.pid)], { allowFailure: true });
      assert.notEqual(onA.code, 0, "the original ended on A");
    } finally {
      await lazyfs.stop(m);
      await serviceBackToA();
    }
  });

  test("Redis with AOF keeps its connected client's data; its AOF and a BGSAVE made on B check valid", async () => {
    const s = await serviceOnA();
    const dir = `${DATA_DIR}/redis`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const redis = await pair.a.startWorkload(
      "redis-server",
      [
        "--port",
        "6379",
        "--bind",
        s,
        "--dir",
        dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--auto-aof-rewrite-percentage",
        "0",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
      ],
      { stdout: `${dir}/redis.log`, cwd: dir },
    );
    // A RESP client: one connection across the migration, and a new one after it.
    const client = String.raw`
import socket,sys,time,os
def conn():
  for t in range(100):
    try:
      s=socket.create_connection((sys.argv[1],6379),timeout=60); return s,s.makefile('rb')
    except OSError: time.sleep(0.05)
  raise SystemExit('no redis')
def cmd(c,*a):
  s,f=c
  s.sendall(b'*%d\r\n' % len(a) + b''.join(b'$%d\r\n%s\r\n' % (len(x),x) for x in (w.encode() for w in a)))
  line=f.readline()
  if line[:1]==b'$':
    n=int(line[1:]); return None if n<0 else f.read(n+2)[:-2].decode()
  return line[1:].strip().decode()
c=conn()
for i in range(100): assert cmd(c,'SET','k%d'%i,'v%d'%i)=='OK'
print('set 100',flush=True)
while not os.path.exists(sys.argv[2]): time.sleep(0.02)
for i in range(100): assert cmd(c,'GET','k%d'%i)=='v%d'%i, i
for i in range(100,200): assert cmd(c,'SET','k%d'%i,'v%d'%i)=='OK'
c2=conn()
for i in range(200): assert cmd(c2,'GET','k%d'%i)=='v%d'%i, i
before=cmd(c2,'LASTSAVE')
assert cmd(c2,'BGSAVE').startswith('Background saving'), 'BGSAVE'
for t in range(400):
  if cmd(c2,'LASTSAVE')!=before: break
  time.sleep(0.05)
else: raise SystemExit('BGSAVE never finished')
print('ok',cmd(c2,'DBSIZE'),flush=True)
`;
    const go = `${DATA_DIR}/redis.go`;
    const out = `${DATA_DIR}/redis-client.txt`;
    const cl = await pair.c.startWorkload("python3", ["-c", client, s, go], { stdout: out });
    await waitFor("100 keys set on A", async () =>
      (await linesIn(pair.c, out)).includes("set 100") ? true : undefined,
    );
    const m = await migrateWithAddress(redis.pid, ["--tcp-established"]);
    try {
      await pair.c.exec("touch", [go]);
      assert.equal(await cl.exited, 0, (await pair.c.readFile(out)).trim());
      assert.deepEqual((await linesIn(pair.c, out)).pop(), "ok 200");
      // Redis's own AOF check on the file as the migrated Redis wrote it.
      const aof = await pair.b.exec("sh", [
        "-c",
        `ls ${m.mountpoint}${dir}/appendonlydir/*.incr.aof`,
      ]);
      const check = await pair.b.exec("redis-check-aof", [aof.stdout.trim()], {
        allowFailure: true,
      });
      assert.equal(check.code, 0, check.stdout + check.stderr);
      assert.match(check.stdout, /is valid/);
      // BGSAVE's child wrote a temporary file by name in Redis's dir and renamed it.
      const rdb = await pair.b.exec(
        "nsenter",
        ["-t", String(m.pid), "-m", "redis-check-rdb", `${dir}/dump.rdb`],
        { allowFailure: true },
      );
      assert.equal(rdb.code, 0, rdb.stdout + rdb.stderr);
      assert.match(rdb.stdout, /RDB looks OK/);
    } finally {
      await lazyfs.stop(m);
      await serviceBackToA();
    }
  });

  test("SQLite in WAL mode goes on inserting with --file-locks; integrity_check ok", async () => {
    const dir = `${DATA_DIR}/sqlite-wal`;
    await pair.a.exec("mkdir", ["-p", dir]);
    const writer =
      "import sqlite3,sys,time\ndb=sqlite3.connect(sys.argv[1],isolation_level=None)\nassert db.execute('pragma journal_mode=wal').fetchone()[0]=='wal'\ndb.execute('create table if not exists t(i integer primary key, v text)')\ni=0\nwhile True:\n  db.execute('insert into t(v) values (?)',('row %d' % i,)); i+=1\n  if i%20==0:\n    ok=db.execute('pragma integrity_check').fetchone()[0]\n    n=db.execute('select count(*) from t').fetchone()[0]\n    print(i,n,ok,flush=True)\n  time.sleep(0.002)";
    const out = `${dir}/writer.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", writer, `${dir}/test.db`], {
      stdout: out,
    });
    await waitFor("inserts on A", async () =>
      (await linesIn(pair.a, out)).length >= 5 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid, ["--file-locks"]);
    try {
      const onB = `${m.mountpoint}${out}`;
      const before = (await linesIn(pair.a, out)).length;
      const lines = await waitFor(
        "inserts on B",
        async () => {
          const l = await linesIn(pair.b, onB);
          return l.length >= before + 20 ? l : undefined;
        },
        30_000,
      );
      for (const [k, line] of lines.entries()) {
        const [i, n, ok] = line.split(" ");
        assert.equal(Number(i), (k + 1) * 20, line);
        assert.equal(n, i, `every insert is there: ${line}`);
        assert.equal(ok, "ok", `integrity_check: ${line}`);
      }
      await sleep(100);
    } finally {
      await lazyfs.stop(m);
    }
  });
});
