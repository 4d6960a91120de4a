/**
 * `lazyfs migrate`, run on the target: over SSH, `criu dump` on the origin (which needs only
 * CRIU and sshd), pull the images, restore here lazily. If the restore here fails, the
 * process is restored back on the origin from the same images, so it is never lost.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { shq } from "../common/shell.js";
import { loadFileTable, warmUpCodec } from "../criu/index.js";
import type { OriginStat, SftpOrigin } from "../origin/index.js";
import { openOrigin } from "./connect.js";
import { callControl } from "./control.js";
import { writeManifest } from "./manifest.js";
import { emptyManifest } from "./plan.js";
import { type RestoreRequest, type RestoreResult, restoreLazily, startDaemon } from "./restore.js";
import { migrationPaths, newMigrationId } from "./state.js";

const log = logger("migrate");

export interface MigrateRequest extends Omit<RestoreRequest, "imagesDir" | "checkpointStats"> {
  pid: number;
  /** CRIU on the origin; default: $LAZYFS_CRIU there, /opt/lazyfs/criu/bin/criu, criu. */
  originCriu?: string;
  /** Keep the dump directory on the origin after a successful migration. */
  keepOriginImages?: boolean;
  /** How long to wait for the first origin fetch to report it in the timeline (ms). */
  firstFetchWaitMs?: number;
}

export interface Timeline {
  /** Dump start to the restored process running on the target. */
  freezeMs: number;
  dumpMs: number;
  transferMs: number;
  imageBytes: number;
  restoreMs: number;
  /** Parts of restoreMs: plan (stats, manifest), daemon start and mount, rewrite, CRIU. */
  planMs: number;
  mountMs: number;
  rewriteMs: number;
  criuRestoreMs: number;
  /** From the restore to the first byte LazyFS fetched from the origin, if any yet. */
  firstFetchMs: number | null;
}

export interface MigrateResult extends RestoreResult {
  timeline: Timeline;
  originImagesDir: string;
}

async function run(origin: SftpOrigin, command: string, what: string): Promise<string> {
  const r = await origin.exec(command);
  if (r.code !== 0) {
    const detail = (r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ");
    throw new UserError(`${origin.name}: ${what} failed (exit ${r.code}): ${detail}`);
  }
  return r.stdout;
}

async function locateRemoteCriu(origin: SftpOrigin, explicit?: string): Promise<string> {
  const candidates = explicit ? [explicit] : ["$LAZYFS_CRIU", "/opt/lazyfs/criu/bin/criu", "criu"];
  const script = candidates
    .map(
      (c) =>
        `c=${c.startsWith("$") ? `"${c}"` : shq(c)}; [ -n "$c" ] && "$c" --version >/dev/null 2>&1 && { command -v "$c" || echo "$c"; exit 0; }`,
    )
    .join("\n");
  const r = await origin.exec(`${script}\nexit 1`);
  const path = r.stdout.trim().split("\n").pop();
  if (r.code !== 0 || !path) {
    throw new UserError(
      `${origin.name}: no usable CRIU on the origin (tried ${explicit ?? "$LAZYFS_CRIU, /opt/lazyfs/criu/bin/criu, criu on PATH"}); install CRIU >= 4 there or pass --origin-criu`,
    );
  }
  return path;
}

async function criuErrorsRemote(origin: SftpOrigin, logFile: string): Promise<string> {
  const r = await origin.exec(`grep -E 'Error \\(' ${shq(logFile)} | tail -5`);
  return r.stdout
    .trim()
    .split("\n")
    .map((l) => l.replace(/^\(\s*[\d.]+\)\s*/, ""))
    .filter(Boolean)
    .join(" | ");
}

/**
 * Copies every file of the remote dump directory into `dir`, and, as soon as the file table
 * has arrived, stats every referenced file on the origin (the checkpoint's view of them,
 * while nothing has touched them yet) in parallel with the rest of the transfer.
 */
async function pullImages(
  origin: SftpOrigin,
  remoteDir: string,
  dir: string,
): Promise<{ bytes: number; stats: Record<string, OriginStat> }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const entries = (await origin.readdir(remoteDir)).filter((e) => !e.stat.isDirectory);
  const tableNames = new Set(["files.img", "reg-files.img"]);
  let bytes = 0;
  const pull = async (name: string, size: number) => {
    const data = await origin.read(`${remoteDir}/${name}`, 0, size);
    await writeFile(join(dir, name), data, { mode: 0o600 });
    bytes += data.length;
  };
  const stats: Record<string, OriginStat> = {};
  const tables = entries.filter((e) => tableNames.has(e.name));
  const statting = Promise.all(tables.map((e) => pull(e.name, e.stat.size))).then(async () => {
    const table = await loadFileTable(dir);
    const paths = new Set<string>();
    for (const e of table.values()) {
      const name = e.reg?.name;
      if (typeof name === "string" && name.startsWith("/")) paths.add(name);
    }
    await Promise.all(
      [...paths].map(async (path) => {
        try {
          stats[path] = await origin.stat(path);
        } catch {
          // Not on the origin's file system (deleted, kernel fs): the plan skips or reports it.
        }
      }),
    );
  });
  await Promise.all([
    statting,
    ...entries.filter((e) => !tableNames.has(e.name)).map((e) => pull(e.name, e.stat.size)),
  ]);
  return { bytes, stats };
}

/**
 * Starts `criu dump` on the origin in a shell that waits for a word on stdin: the SSH
 * session set-up (tens of ms with OpenSSH) happens before the process is frozen.
 */
async function armDump(
  origin: SftpOrigin,
  argv: string[],
): Promise<{ go: () => void; done: Promise<{ code: number; stdout: string; stderr: string }> }> {
  let resolveReady!: (go: () => void) => void;
  let rejectReady!: (err: unknown) => void;
  const ready = new Promise<() => void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const done = origin.exec(`echo armed; read go && exec ${argv.map(shq).join(" ")}`, {
    onChannel: (ch) => {
      let out = "";
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.includes("armed\n")) {
          ch.off("data", onData);
          resolveReady(() => ch.write("go\n"));
        }
      };
      ch.on("data", onData);
    },
  });
  done.then(
    () => rejectReady(new UserError(`${origin.name}: the dump shell ended before it was armed`)),
    rejectReady,
  );
  return { go: await ready, done };
}

export async function migrateProcess(req: MigrateRequest): Promise<MigrateResult> {
  if (!Number.isInteger(req.pid) || req.pid <= 0) {
    throw new UserError(`--pid ${req.pid}: not a process id`);
  }
  const id = req.id ?? newMigrationId();
  const paths = migrationPaths(id);
  const origin = openOrigin(req.origin, req.ssh);
  let done = false;
  let dumped = false;
  try {
    await origin.connect();
    // Mount an empty tree before the dump; the plan is added to it once the images are here.
    const mountpoint = req.mountpoint ?? paths.defaultMountpoint;
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    await writeManifest(
      paths.manifest,
      emptyManifest({
        id,
        originUrl: req.origin,
        mountpoint,
        cacheDir: req.cacheDir ?? paths.cache,
        imagesDir: paths.images,
        maps: req.maps,
        ssh: req.ssh,
        serve: req.serve,
      }),
    );
    const daemonStarting = startDaemon(id).then(async (d) => {
      await d.serve();
      return d;
    });
    daemonStarting.catch(() => {});
    const criu = await locateRemoteCriu(origin, req.originCriu);
    // On tmpfs when the origin has one: CRIU writes the images faster there.
    const remoteDir = (
      await run(
        origin,
        "mktemp -d -p /dev/shm lazyfs-dump.XXXXXX 2>/dev/null || mktemp -d /tmp/lazyfs-dump.XXXXXX",
        "mktemp",
      )
    ).trim();
    const dumpArgv = [
      criu,
      "dump",
      "-t",
      String(req.pid),
      "-D",
      remoteDir,
      "-o",
      "dump.log",
      "-v4",
    ];
    if (req.shellJob) dumpArgv.push("--shell-job");
    warmUpCodec(); // protobufjs compiles codecs lazily: do it before the freeze
    const armed = await armDump(origin, dumpArgv);
    const daemon = await daemonStarting;
    const tDump = Date.now();
    armed.go();
    const dump = await armed.done;
    if (dump.code !== 0) {
      const errors = await criuErrorsRemote(origin, `${remoteDir}/dump.log`);
      await origin.exec(`rm -rf ${shq(remoteDir)}`);
      throw new UserError(
        `${origin.name}: criu dump of pid ${req.pid} failed: ${errors || dump.stderr.trim() || `exit ${dump.code}`}`,
      );
    }
    dumped = true;
    const tPull = Date.now();
    const { bytes: imageBytes, stats: checkpointStats } = await pullImages(
      origin,
      remoteDir,
      paths.images,
    );
    const tPulled = Date.now();
    let restored: RestoreResult;
    try {
      restored = await restoreLazily({
        ...req,
        id,
        imagesDir: paths.images,
        checkpointStats,
        originConnection: origin,
        daemon,
      });
    } catch (err) {
      log.warn("restore on the target failed; restoring the process back on the origin", {
        error: errorMessage(err),
      });
      // The dumped pid must be free there again (a just-killed task may still be unreaped).
      const wait = `i=0; while [ -e /proc/${req.pid} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; `;
      const back = await origin.exec(
        wait +
          [criu, "restore", "-d", "-D", remoteDir, "-o", "restore-back.log", "-v4"]
            .map(shq)
            .join(" "),
      );
      const fate =
        back.code === 0
          ? `the process runs again on ${origin.name} (images kept in ${remoteDir})`
          : `restoring it back on ${origin.name} failed too; its images are kept in ${remoteDir} there and in ${paths.images} here`;
      throw new UserError(`${errorMessage(err)}; ${fate}`);
    }
    const tRestored = Date.now();
    done = true;
    if (!req.keepOriginImages) await origin.exec(`rm -rf ${shq(remoteDir)}`);
    const firstFetchMs = await waitFirstFetch(paths.socket, tRestored, req.firstFetchWaitMs ?? 0);
    return {
      ...restored,
      originImagesDir: remoteDir,
      timeline: {
        freezeMs: tRestored - tDump,
        dumpMs: tPull - tDump,
        transferMs: tPulled - tPull,
        imageBytes,
        restoreMs: tRestored - tPulled,
        planMs: restored.planMs,
        mountMs: restored.mountMs,
        rewriteMs: restored.rewriteMs,
        criuRestoreMs: restored.criuRestoreMs,
        firstFetchMs,
      },
    };
  } finally {
    if (!done) await callControl(paths.socket, { op: "unmount", force: true }).catch(() => {});
    // Nothing was checkpointed: leave no trace of this migration here.
    if (!dumped) await rm(paths.dir, { recursive: true, force: true });
    await origin.close();
  }
}

/** Polls the daemon until it reports a first origin fetch, or the wait is over. */
async function waitFirstFetch(
  socket: string,
  since: number,
  waitMs: number,
): Promise<number | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const st = (await callControl(socket, { op: "status" }).catch(() => undefined)) as
      | { firstFetchAtMs?: number | null }
      | undefined;
    if (st?.firstFetchAtMs) return Math.max(0, st.firstFetchAtMs - since);
    if (Date.now() >= deadline) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
}
