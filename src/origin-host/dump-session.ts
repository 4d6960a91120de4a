/**
 * The dump and the checkpoint's view of the files in one SSH exchange on the origin: a shell
 * armed before the freeze runs `criu dump`, says how it ended, and then runs what the target
 * sends it while the process is still frozen: `stat` of every referenced file (inode, size,
 * ctime, mtime to the nanosecond) and, with `--origin-snapshot`, reflink clones of the files
 * the target will read, so that later changes on the origin no longer matter.
 *
 * Clones live on the file's own file system (a clone cannot cross file systems), in
 * `<mount point>/.lazyfs-snapshots/<dump directory name>/`; those directories are removed
 * when the origin is released, the migration ends or fails (removeSnapshots).
 */
import { lstat } from "node:fs/promises";
import type { ClientChannel } from "ssh2";
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { shq } from "../common/shell.js";
import { type PolicyRule, resolvePolicy } from "../fetch/index.js";
import { mapPath, type PathMap, type Snapshot } from "../migration/index.js";
import {
  EXACT_STAT_FORMAT,
  type OriginStat,
  parseExactStat,
  type SftpOrigin,
} from "../origin/index.js";

const log = logger("dump");

export type SnapshotMode = "none" | "reflink" | "auto";

export function parseSnapshotMode(text: string): SnapshotMode {
  if (text === "none" || text === "reflink" || text === "auto") return text;
  throw new UserError(`--origin-snapshot ${JSON.stringify(text)}: expected reflink, auto or none`);
}

const DUMPED = "@@lazyfs-dumped ";
const STAGE_END = "@@lazyfs-end ";

export interface DumpSession {
  /** Starts the dump (the freeze). */
  go(): void;
  /** CRIU's exit status and stderr, once the dump has ended. */
  dumped: Promise<{ code: number; stderr: string }>;
  /** `stat` of `paths` in this session (paths missing there are left out). */
  stat(paths: readonly string[]): Promise<Record<string, OriginStat>>;
  /**
   * Clones `paths` (with their dump-time stats) into snapshot directories; a file that cannot
   * be cloned is an error in `reflink` mode and left unsnapshotted (a warning) in `auto` mode.
   */
  snapshot(
    paths: readonly string[],
    stats: Record<string, OriginStat>,
    mode: Exclude<SnapshotMode, "none">,
  ): Promise<Map<string, Snapshot>>;
  /** Snapshot directories made so far (to remove at the end). */
  snapshotDirs: string[];
  /** Ends the session (the origin's shell exits). */
  end(): Promise<void>;
}

/**
 * Starts `argv` (criu dump) on the origin in a shell that waits for a word on stdin: the SSH
 * session set-up happens before the process is frozen. `dumpDir` names the snapshots.
 */
export async function openDumpSession(
  origin: SftpOrigin,
  argv: string[],
  dumpDir: string,
): Promise<DumpSession> {
  let channel!: ClientChannel;
  let out = "";
  let stderr = "";
  let waiter: (() => void) | undefined;
  const onData = () => waiter?.();
  let closed!: Promise<{ code: number; stdout: string; stderr: string }>;
  const ready = new Promise<void>((resolve, reject) => {
    const done = origin.exec(
      `echo armed; read go || exit 1; ${argv.map(shq).join(" ")}; rc=$?; echo "${DUMPED}$rc"; [ $rc -eq 0 ] || exit $rc; exec sh -s`,
      {
        onChannel: (ch) => {
          channel = ch;
          ch.on("data", (d: Buffer) => {
            out += d.toString();
            if (out.includes("armed\n")) resolve();
            onData();
          });
          ch.stderr.on("data", (d: Buffer) => {
            stderr += d.toString();
          });
        },
      },
    );
    closed = done.then(
      (r) => r,
      (err) => ({ code: -1, stdout: "", stderr: String(err) }),
    );
    done.then(
      () => reject(new UserError(`${origin.name}: the dump shell ended before it was armed`)),
      reject,
    );
  });
  await ready;
  /** Resolves with the output after `marker` once `marker` and a line after it are there. */
  const waitFor = (marker: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const i = out.indexOf(marker);
        const nl = i < 0 ? -1 : out.indexOf("\n", i);
        if (nl >= 0) {
          waiter = undefined;
          const text = out.slice(0, nl + 1);
          out = out.slice(nl + 1);
          resolve(text);
        }
      };
      waiter = check;
      check();
      void closed.then((r) => {
        if (waiter === check) {
          waiter = undefined;
          reject(
            new UserError(
              `${origin.name}: the dump shell ended (exit ${r.code}): ${(stderr || r.stderr).trim().split("\n").slice(-1)[0] ?? ""}`,
            ),
          );
        }
      });
    });
  let stage = 0;
  /** Runs `script` in the session; resolves with its output lines. */
  const run = async (script: string): Promise<string[]> => {
    const marker = `${STAGE_END}${++stage}`;
    channel.write(`${script}\necho '${marker}'\n`);
    const text = await waitFor(marker);
    return text.split("\n").slice(0, -2);
  };
  const dumped = (async () => {
    try {
      const text = await waitFor(DUMPED);
      const code = Number(text.slice(text.lastIndexOf(DUMPED) + DUMPED.length).trim());
      return { code, stderr };
    } catch {
      const r = await closed;
      return { code: r.code === 0 ? 1 : r.code, stderr: stderr || r.stderr };
    }
  })();
  const session: DumpSession = {
    go: () => channel.write("go\n"),
    dumped,
    snapshotDirs: [],
    async stat(paths) {
      const out: Record<string, OriginStat> = {};
      if (paths.length === 0) return out;
      const lines = await run(
        paths
          .map(
            (p, i) =>
              `printf 'S${i} '; stat -L --printf '${EXACT_STAT_FORMAT}\\n' -- ${shq(p)} 2>/dev/null || echo -`,
          )
          .join("\n"),
      );
      for (const line of lines) {
        const m = /^S(\d+) (.*)$/.exec(line);
        const st = m ? parseExactStat(m[2]) : undefined;
        if (m && st) out[paths[Number(m[1])]!] = st;
      }
      return out;
    },
    async snapshot(paths, stats, mode) {
      const snaps = new Map<string, Snapshot>();
      if (paths.length === 0) return snaps;
      const name = dumpDir.split("/").pop()!;
      // Per file: its file system's snapshot directory, the clone, its stat, the original's
      // stat again (a change while cloning shows there).
      const script = paths.map((p, i) => {
        const q = shq(p);
        return [
          `if m=$(stat -L -c %m -- ${q} 2>/dev/null); then`,
          `  d="\${m%/}/.lazyfs-snapshots/${name}"; mkdir -p -m 0700 "$d" && echo "D $d"`,
          `  if err=$(cp --reflink=always --preserve=timestamps -- ${q} "$d/${i}" 2>&1); then`,
          `    printf 'C${i} %s\\n' "$d/${i}"; printf 'N${i} '; stat --printf '${EXACT_STAT_FORMAT}\\n' -- "$d/${i}"`,
          `    printf 'A${i} '; stat -L --printf '${EXACT_STAT_FORMAT}\\n' -- ${q} 2>/dev/null || echo -`,
          `  else rm -f -- "$d/${i}"; printf 'E${i} %s\\n' "$(printf %s "$err" | tr '\\n' ' ')"; fi`,
          `else echo "E${i} cannot find its file system"; fi`,
        ].join("\n");
      });
      const lines = await run(script.join("\n"));
      const clone = new Map<number, string>();
      const cloneStat = new Map<number, OriginStat>();
      const after = new Map<number, OriginStat | undefined>();
      const failed = new Map<number, string>();
      for (const line of lines) {
        if (line.startsWith("D ")) {
          const dir = line.slice(2);
          if (!session.snapshotDirs.includes(dir)) session.snapshotDirs.push(dir);
          continue;
        }
        const m = /^([CNAE])(\d+) (.*)$/.exec(line);
        if (!m) continue;
        const i = Number(m[2]);
        if (m[1] === "C") clone.set(i, m[3]!);
        else if (m[1] === "N") {
          const st = parseExactStat(m[3]);
          if (st) cloneStat.set(i, st);
        } else if (m[1] === "A") after.set(i, parseExactStat(m[3]));
        else failed.set(i, m[3]!.trim());
      }
      paths.forEach((p, i) => {
        const before = stats[p];
        const now = after.get(i);
        const c = clone.get(i);
        const cs = cloneStat.get(i);
        let why = failed.get(i);
        if (!why && (!c || !cs)) why = "no clone was made";
        if (
          !why &&
          before &&
          now &&
          (now.ino !== before.ino ||
            now.size !== before.size ||
            now.mtimeMs !== before.mtimeMs ||
            now.ctimeMs !== before.ctimeMs)
        ) {
          why = "it changed while it was cloned";
        }
        if (!why && cs && before && (cs.size !== before.size || cs.mtimeMs !== before.mtimeMs)) {
          why = "the clone's size or mtime differs from the file's";
        }
        if (why) {
          if (mode === "reflink") {
            throw new UserError(
              `--origin-snapshot reflink: cannot clone ${p} on ${origin.name}: ${why} (the file's file system must support reflinks, e.g. btrfs or xfs; --origin-snapshot auto goes on without a snapshot)`,
            );
          }
          log.warn(
            "no snapshot of this file; it is read from the live file (changes are refused)",
            {
              path: p,
              reason: why,
            },
          );
          return;
        }
        snaps.set(p, { path: c!, stat: cs! });
      });
      return snaps;
    },
    async end() {
      try {
        channel.end();
      } catch {
        // already gone
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, 5000).unref())]);
    },
  };
  return session;
}

/** Removes snapshot directories on the origin (best effort; they are root's, mode 0700). */
export async function removeSnapshots(origin: SftpOrigin, dirs: readonly string[]): Promise<void> {
  if (dirs.length === 0) return;
  const failed = (why: string) => ({ code: -1, stderr: why, stdout: "" });
  // Bounded: an origin that is away (a hard mount waits for it) must not hold anyone up.
  const r = await Promise.race([
    origin
      .exec(
        `rm -rf -- ${dirs.map(shq).join(" ")}; rmdir -- ${dirs.map((d) => shq(d.replace(/\/[^/]+$/, ""))).join(" ")} 2>/dev/null; true`,
        { timeoutMs: 60_000 },
      )
      .catch((err: unknown) => failed(String(err))),
    new Promise<ReturnType<typeof failed>>((resolve) =>
      setTimeout(() => resolve(failed("the origin did not answer within 60 s")), 60_000).unref(),
    ),
  ]);
  if (r.code !== 0)
    log.warn("could not remove snapshots on the origin", { dirs, error: r.stderr.trim() });
}

/**
 * The referenced files the target will read from the origin, so the ones worth a snapshot:
 * regular files outside kernel file systems, not `remote` (live by design) nor `scrub`, and
 * not already identical on the target (as the plan judges it).
 */
export async function filesToSnapshot(
  stats: Record<string, OriginStat>,
  policies: readonly PolicyRule[],
  maps: readonly PathMap[],
): Promise<string[]> {
  const out: string[] = [];
  for (const [path, st] of Object.entries(stats)) {
    if ((st.mode & 0o170000) !== 0o100000 || /^\/(proc|sys|dev)\//.test(path)) continue;
    const policy = resolvePolicy(path, policies);
    if (policy === "remote" || policy === "scrub") continue;
    const local = await lstat(mapPath(path, maps)).catch(() => undefined);
    const identical =
      local?.isFile() && local.size === st.size && Math.abs(local.mtimeMs - st.mtimeMs) < 1000;
    if (!identical) out.push(path);
  }
  return out.sort();
}
