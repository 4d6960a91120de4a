/**
 * The whole-origin view (the default): after the migration the process finds by name what it
 * never had open at the dump, anywhere in the origin's tree, while the paths that belong to
 * the target (its identity files, /proc) are the target's. Real programs: a Python process
 * importing a module from a sibling directory, and nginx (master + 2 workers) serving its
 * document root and reloading its configuration.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { type ClientHostPair, DATA_DIR } from "../../src/hosts/index.js";
import { AWAIT_GO, type LazyfsOnB, linesIn, startHosts, stopHosts, waitFor } from "./helpers.js";

let pair: ClientHostPair;
let lazyfs: LazyfsOnB;

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

const PROGRAM = `${AWAIT_GO}
import hashlib,os,sys,time
sys.path.insert(0, os.path.join(os.getcwd(), '..', 'wv-lib'))
def report(tag):
  print(tag, 'hostname', open('/etc/hostname').read().strip(), flush=True)
  print(tag, 'proc', open('/proc/self/stat').read().split()[0] == str(os.getpid()), flush=True)
report('A')
await_go()
import sibling_mod
print('B module', sibling_mod.VALUE, flush=True)
print('B conf', open(sys.argv[1]).read().strip(), flush=True)
print('B services', hashlib.sha256(open('/etc/services','rb').read()).hexdigest(), flush=True)
report('B')
print('done', flush=True)
while True: time.sleep(1)
`;

describe("the whole-origin view", { concurrency: false }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts({ client: true }));
  });
  after(() => stopHosts({ pair, lazyfs }));

  test("a Python process imports a module from a sibling directory and reads a config by name from the origin; /etc/hostname and /proc are the target's", async () => {
    const dir = `${DATA_DIR}/wv-app`;
    const conf = `${DATA_DIR}/wv-conf/app.conf`;
    await pair.a.exec("mkdir", ["-p", dir, `${DATA_DIR}/wv-lib`, `${DATA_DIR}/wv-conf`]);
    await pair.a.writeFile(`${DATA_DIR}/wv-lib/sibling_mod.py`, "VALUE = 'from-the-origin'\n");
    await pair.a.writeFile(conf, "origin config\n");
    // The target has a config of its own at the same path: the process must see the origin's.
    await pair.b.exec("mkdir", ["-p", `${DATA_DIR}/wv-conf`]);
    await pair.b.writeFile(conf, "target config\n");
    // Same size and mtime on both hosts: only the content tells them apart.
    for (const h of [pair.a, pair.b]) await h.exec("touch", ["-d", "2024-01-01 00:00:00", conf]);
    const out = `${dir}/out.txt`;
    const wl = await pair.a.startWorkload("python3", ["-c", PROGRAM, conf], {
      stdout: out,
      cwd: dir,
    });
    await waitFor("the report on A", async () =>
      (await linesIn(pair.a, out)).length >= 2 ? true : undefined,
    );
    const m = await lazyfs.migrate(wl.pid, ["--view", "whole"]);
    try {
      await pair.b.exec("kill", ["-USR1", String(m.pid)]);
      const lines = await waitFor(
        "the report on B",
        async () => {
          const l = await linesIn(pair.b, `${m.mountpoint}${out}`);
          return l.includes("done") ? l : undefined;
        },
        30_000,
      );
      const hostA = (await pair.a.readFile("/etc/hostname")).trim();
      const hostB = (await pair.b.readFile("/etc/hostname")).trim();
      assert.notEqual(hostA, hostB, "the simulated hosts have identities of their own");
      const services = sha256(await pair.b.readFile("/etc/services"));
      assert.deepEqual(lines, [
        `A hostname ${hostA}`,
        "A proc True",
        "B module from-the-origin",
        "B conf origin config",
        `B services ${services}`,
        `B hostname ${hostB}`,
        "B proc True",
        "done",
      ]);
      const st = await lazyfs.status(m.id);
      assert.equal(st.view, "whole");
      // /etc/services was never open at the dump: the target's identical copy served it.
      const services_ = st.perFile.find((f) => f.path === "/etc/services");
      assert.ok(services_, "the process's read of /etc/services went through LazyFS");
      assert.equal(services_.bytesFromOrigin, 0, "nothing of it came from the origin");
      assert.ok(st.identical.identicalFiles >= 1, JSON.stringify(st.identical));
      // The config had the same size and mtime here: its hash said no, it came from the origin.
      assert.equal(st.identical.hashMismatches, 1, JSON.stringify(st.identical));
    } finally {
      await lazyfs.stop(m);
    }
  });

  test("nginx (master + 2 workers) serves files of its document root no process had open at the dump, byte-exact, and nginx -s reload works", async () => {
    const dir = `${DATA_DIR}/wv-nginx`;
    const www = `${DATA_DIR}/wv-www`;
    const conf = `${dir}/nginx.conf`;
    await pair.a.exec("mkdir", ["-p", dir, www]);
    const files = [1, 2, 3, 4, 5].map((i) => ({ name: `f${i}.bin`, data: randomBytes(i << 18) }));
    for (const f of files) await pair.a.writeFile(`${www}/${f.name}`, f.data);
    await pair.a.writeFile(`${www}/index.html`, "<h1>nginx on LazyFS</h1>\n");
    await pair.addServiceAddress(pair.a);
    await pair.addServiceAddress(pair.b);
    await pair.routeServiceTo(pair.a);
    const s = pair.serviceAddress;
    // Workers as root: CRIU's parasite cannot raise RLIMIT_NOFILE inside a worker that gave up
    // its privileges (user nobody), on a plain CRIU dump too.
    const config = (extra: string) => `daemon off;
user root;
master_process on;
worker_processes 2;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server { listen ${s}:8080; root ${www};${extra} }
}
`;
    await pair.a.writeFile(conf, config(""));
    const master = await pair.a.startWorkload("nginx", ["-c", conf], {
      stdout: `${dir}/stdout.log`,
    });
    const get = async (path: string) =>
      (
        await pair.c.exec(
          "python3",
          [
            "-c",
            "import sys,urllib.request,hashlib\nb=urllib.request.urlopen(sys.argv[1],timeout=10).read()\nprint(hashlib.sha256(b).hexdigest(), b[:40].decode('latin-1').strip())",
            `http://${s}:8080${path}`,
          ],
          { timeoutMs: 30_000 },
        )
      ).stdout.trim();
    await waitFor("nginx on A", async () =>
      (await get("/index.html").catch(() => "")) ? true : undefined,
    );
    const workers = async (host: typeof pair.a, pid: number) =>
      (await host.exec("pgrep", ["-P", String(pid)], { allowFailure: true })).stdout
        .split("\n")
        .filter(Boolean);
    assert.equal((await workers(pair.a, master.pid)).length, 2, "master and 2 workers on A");
    const m = await lazyfs.migrate(master.pid, ["--view", "whole"]);
    try {
      await pair.routeServiceTo(pair.b);
      await pair.removeServiceAddress(pair.a);
      assert.equal((await workers(pair.b, m.pid)).length, 2, "master and 2 workers on B");
      for (const f of files) {
        assert.equal((await get(`/${f.name}`)).split(" ")[0], sha256(f.data), f.name);
      }
      // The configuration is read by name again, from the origin's tree, in the process's view.
      await pair.b.writeFile(
        `${m.mountpoint}${conf}`,
        config(' location = /reloaded { return 200 "reloaded\\n"; }'),
      );
      await pair.b.exec("nsenter", [
        `--mount=/proc/${m.pid}/ns/mnt`,
        "--",
        "nginx",
        "-c",
        conf,
        "-s",
        "reload",
      ]);
      await waitFor("the reloaded configuration", async () =>
        (await get("/reloaded").catch(() => "")).endsWith("reloaded") ? true : undefined,
      );
      assert.equal((await get("/f3.bin")).split(" ")[0], sha256(files[2]!.data));
      const errors = await pair.b.readFile(`${m.mountpoint}${dir}/error.log`);
      assert.doesNotMatch(errors, /\[emerg\]|No such file/, errors);
    } finally {
      await lazyfs.stop(m);
      await pair.removeServiceAddress(pair.b).catch(() => {});
      await pair.removeServiceAddress(pair.a).catch(() => {});
    }
  });
});
