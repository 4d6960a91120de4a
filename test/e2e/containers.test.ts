/**
 * End to end: a podman container migrates from host a to host b with `lazyfs migrate
 * --container`; its image and its volume follow on reference. Each host has podman storage
 * of its own (tmpfs over podman's directories in its mount namespace). Needs the test image
 * scripts/setup.sh builds.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Host, HostPair } from "../../src/hosts/index.js";
import { errorLines, type LazyfsOnB, startHosts, stopHosts, waitFor } from "./helpers.js";

const IMAGE_TAR = process.env.LAZYFS_TEST_IMAGE ?? "/var/cache/lazyfs/bookworm-python3.tar";
const PODMAN = "PATH=/opt/lazyfs/podman-bin:$PATH podman --runtime runc";
/** Containers start here only with these limits (no CAP_SYS_RESOURCE). */
const LIMITS = "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096";
const VOLUME = "/srv/lazyfs-data/vol";
/**
 * Appends `i sha256(MiB i*97 mod 256 of /big)` to /data/out, one line every 0.1 s unless
 * /data/pause exists (the test holds its reads while it measures what the restore fetched): scattered
 * MiBs (97 is prime to 256), so what crosses is what it reads, not a sequential readahead.
 */
const APP = `import hashlib,os,time
f=open('/big','rb'); i=0
while True:
  time.sleep(0.1)
  if os.path.exists('/data/pause'): continue
  f.seek((i*97%256)<<20); h=hashlib.sha256(f.read(1<<20)).hexdigest()
  with open('/data/out','a') as o: o.write('%d %s\\n'%(i,h))
  i+=1`;

let env: { pair: HostPair; lazyfs: LazyfsOnB };

const podman = (host: Host, cmd: string, allowFailure = false) =>
  host.exec("sh", ["-c", `${PODMAN} ${cmd}`], { allowFailure, timeoutMs: 300_000 });

/** Podman storage of the host's own, gone with the host. */
async function ownPodmanStorage(host: Host): Promise<void> {
  const dirs = ["/var/lib/containers", "/run/containers", "/run/libpod", "/dev/shm", "/var/tmp"];
  const script = dirs.map((d) => `mkdir -p ${d} && mount -t tmpfs -o mode=755 lazyfs-podman ${d}`);
  await host.exec("sh", ["-c", `${script.join(" && ")} && chmod 1777 /dev/shm /var/tmp`]);
}

function migrateArgs(lazyfs: LazyfsOnB, name: string): string[] {
  return [
    "migrate",
    "--container",
    name,
    "--from",
    `ssh://root@${env.pair.a.address}`,
    ...lazyfs.sshArgs(),
    "--json",
  ];
}

const lines = async (host: Host, path: string) =>
  (await host.readFile(path)).split("\n").filter((l) => l.length > 0);

describe("lazyfs migrate --container", { timeout: 600_000 }, () => {
  let expected: string[];
  before(async () => {
    env = await startHosts();
    const { a, b } = env.pair;
    await ownPodmanStorage(a);
    await ownPodmanStorage(b);
    await podman(a, `import ${IMAGE_TAR} lazyfs-test:base`);
    // The app's image: the base and a layer with a 256 MiB file of random bytes.
    await podman(
      a,
      `run --name mk --network none ${LIMITS} lazyfs-test:base sh -c 'head -c 268435456 /dev/urandom >/big' && ${PODMAN} commit mk lazyfs-test:big && ${PODMAN} rm mk`,
    );
    const sums = await podman(
      a,
      `run --rm --network none ${LIMITS} lazyfs-test:big python3 -c "import hashlib
f=open('/big','rb')
for i in range(256): print(hashlib.sha256(f.read(1<<20)).hexdigest())"`,
    );
    expected = sums.stdout.trim().split("\n");
    assert.equal(expected.length, 256);
    await a.exec("mkdir", ["-p", VOLUME]);
    await podman(
      a,
      `run -d --name app --network none ${LIMITS} -v ${VOLUME}:/data lazyfs-test:big python3 -c "${APP}"`,
    );
    await waitFor("the app's first lines", async () =>
      (await lines(a, `${VOLUME}/out`).catch(() => [])).length >= 5 ? true : undefined,
    );
  });
  after(async () => {
    await stopHosts(env);
  });

  test("a restore refused here leaves the container running on the origin", async () => {
    const { a, b } = env.pair;
    // A container named `app` here already: podman refuses to restore another one.
    await podman(b, `import ${IMAGE_TAR} lazyfs-test:other`);
    await podman(b, `create --name app --network none ${LIMITS} lazyfs-test:other true`);
    const r = await env.lazyfs.run(migrateArgs(env.lazyfs, "app"), true);
    assert.notEqual(r.code, 0);
    const errs = errorLines(r.stderr);
    assert.equal(errs.length, 1, r.stderr);
    assert.match(errs[0]!, /the container runs on .* again/);
    const state = await podman(a, "container inspect app --format '{{.State.Running}}'");
    assert.equal(state.stdout.trim(), "true");
    const before = (await lines(a, `${VOLUME}/out`)).length;
    await waitFor("the app to go on on the origin", async () =>
      (await lines(a, `${VOLUME}/out`)).length > before + 3 ? true : undefined,
    );
    await podman(b, "rm -f app");
  });

  test("the container runs here, its output goes on without a gap, its image follows lazily", async () => {
    const { a, b } = env.pair;
    const imageBytes = Number(
      (await podman(a, "image inspect lazyfs-test:big --format '{{.Size}}'")).stdout.trim(),
    );
    await a.writeFile(`${VOLUME}/pause`, "");
    const r = await env.lazyfs.run(migrateArgs(env.lazyfs, "app"));
    const m = JSON.parse(r.stdout) as { id: string; mountpoint: string; archiveBytes: number };
    const atRestore0 = await env.lazyfs.status(m.id);
    // Bytes fetched from the origin host (not `bytesOnOrigin`: what is still only there).
    const fetchedAtRestore = atRestore0.origins.find((o) => o.kind === "origin")?.bytes ?? 0;
    const top = [...atRestore0.perFile]
      .sort((x, y) => y.bytesLocal - x.bytesLocal)
      .slice(0, 5)
      .map((f) => `${f.path} ${f.bytesLocal}`);
    assert.ok(
      fetchedAtRestore < imageBytes / 10,
      `${fetchedAtRestore} bytes of a ${imageBytes}-byte image crossed before it ran (reads held): ${top.join(", ")}`,
    );
    await b.exec("rm", [`${m.mountpoint}${VOLUME}/pause`]);
    const gone = await podman(a, "container exists app", true);
    assert.notEqual(gone.code, 0, "the origin's container is removed");
    const out = `${m.mountpoint}${VOLUME}/out`;
    const atRestore = (await lines(b, out)).length;
    await waitFor("the app to go on here", async () =>
      (await lines(b, out)).length > atRestore + 10 ? true : undefined,
    );
    const all = await lines(b, out);
    all.forEach((line, i) => {
      const [n, sum] = line.split(" ");
      assert.equal(Number(n), i, `line ${i} follows line ${i - 1}`);
      assert.equal(sum, expected[(i * 97) % 256], `MiB ${(i * 97) % 256} of /big read right`);
    });
    await podman(
      b,
      `--storage-opt overlay.imagestore=${m.mountpoint}/var/lib/containers/storage rm -f app`,
    );
    await env.lazyfs.run(["unmount", m.id, "--force", "--purge"], true);
  });
});
