/**
 * What a dump references, read from a CRIU images directory: per task its fds, its file-backed
 * memory mappings, exe, cwd and root; plus a flat list of every distinct referenced regular-file
 * entry (files, directories, devices), which is what the migration planner consumes.
 *
 * Every reference goes through a file id of files.img (or legacy reg-files.img): fdinfo `id`,
 * VMA `shmid`, mm `exe_file_id`, fs `cwd_id`/`root_id`.
 *
 * JSON form (`lazyfs inspect --json`) is exactly `DumpModel` below, serialized with
 * JSON.stringify: numbers are bytes / plain integers, flags are numeric (as in the kernel)
 * with a readable `flagsText` next to them, absent optional fields are omitted.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { readHead, UnreadableFileError } from "../common/bounded-read.js";
import { errnoCode, UserError } from "../common/errors.js";
import { normalizeAbsolute } from "../common/paths.js";
import {
  type CriuImage,
  decodeEntries,
  decodeEntry,
  expectKind,
  ImageError,
  readImage,
} from "./image.js";
import { LOG_HEAD_BYTES, MAX_TASKS } from "./limits.js";

/** fd_types of fdinfo.proto, lower-cased. */
export const FD_KINDS = [
  "und",
  "reg",
  "pipe",
  "fifo",
  "inetsk",
  "unixsk",
  "eventfd",
  "eventpoll",
  "inotify",
  "signalfd",
  "packetsk",
  "tty",
  "fanotify",
  "netlinksk",
  "ns",
  "tunf",
  "ext",
  "timerfd",
  "memfd",
  "bpfmap",
  "pidfd",
] as const;

export interface FdModel {
  fd: number;
  /** fd_types name: reg, pipe, fifo, unixsk, tty, ... */
  kind: string;
  fileId: number;
  /** Path of the file (reg, fifo, tty), `pipe:[id]`, socket name, `memfd:<id>`. */
  path?: string;
  /** Open-file status flags (O_ACCMODE, O_APPEND, ...) as stored by CRIU. */
  flags: number;
  flagsText: string;
  /** Descriptor flags (FD_CLOEXEC) from fdinfo. */
  fdFlags: number;
  pos?: number;
  /** File size in bytes at dump time (regular files). */
  size?: number;
  /** st_mode at dump time. */
  mode?: number;
}

export interface MappingModel {
  path: string;
  fileId: number;
  start: number;
  end: number;
  /** Offset into the file, in bytes. */
  pgoff: number;
  /** PROT_* bits and text (`r-x`). */
  prot: number;
  protText: string;
  /** MAP_* flags as stored by CRIU. */
  flags: number;
  shared: boolean;
}

export interface TaskModel {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  threads: number[];
  comm: string;
  exe?: string;
  cwd?: string;
  root?: string;
  fds: FdModel[];
  mappings: MappingModel[];
}

export interface FileUse {
  pid: number;
  use: "fd" | "map" | "exe" | "cwd" | "root";
  fd?: number;
  start?: number;
}

export interface FileRef {
  path: string;
  /** file, dir, chr, blk, fifo, sock, link, or unknown when CRIU stored no mode. */
  type: string;
  size?: number;
  mode?: number;
  /** files.img ids that name this path. */
  fileIds: number[];
  usedBy: FileUse[];
}

export interface DumpModel {
  dir: string;
  /** CRIU version from a dump log in the directory, when one is there. */
  criuVersion?: string;
  imgVersion: number;
  /** CRIU's id of the dump run (names its nftables network lock `inet CRIU-<id>`). */
  criuRunId?: string;
  tasks: TaskModel[];
  files: FileRef[];
}

/** One entry of the file table, whatever image it came from. */
export interface FileEntry {
  id: number;
  kind: string;
  reg?: Record<string, unknown>;
  sub?: Record<string, unknown>;
}

const O_ACCMODE = 3;
const FLAG_NAMES: [number, string][] = [
  [0o100, "O_CREAT"],
  [0o1000, "O_TRUNC"],
  [0o2000, "O_APPEND"],
  [0o4000, "O_NONBLOCK"],
  [0o4010000, "O_SYNC"],
  [0o10000, "O_DSYNC"],
  [0o20000, "O_ASYNC"],
  [0o40000, "O_DIRECT"],
  [0o100000, "O_LARGEFILE"],
  [0o200000, "O_DIRECTORY"],
  [0o400000, "O_NOFOLLOW"],
  [0o1000000, "O_NOATIME"],
  [0o2000000, "O_CLOEXEC"],
  [0o10000000, "O_PATH"],
];

/** `O_WRONLY|O_APPEND` for an open-flags word. */
export function openFlagsText(flags: number): string {
  const parts = [["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][flags & O_ACCMODE]!];
  let rest = flags & ~O_ACCMODE;
  for (const [bit, name] of FLAG_NAMES) {
    if ((rest & bit) === bit) {
      parts.push(name);
      rest &= ~bit;
    }
  }
  if (rest) parts.push(`0${rest.toString(8)}`);
  return parts.join("|");
}

const protText = (p: number) => `${p & 1 ? "r" : "-"}${p & 2 ? "w" : "-"}${p & 4 ? "x" : "-"}`;

function fileType(mode: number | undefined): string {
  if (mode === undefined) return "unknown";
  const t = mode & 0o170000;
  const types: [number, string][] = [
    [0o100000, "file"],
    [0o040000, "dir"],
    [0o020000, "chr"],
    [0o060000, "blk"],
    [0o010000, "fifo"],
    [0o140000, "sock"],
    [0o120000, "link"],
  ];
  return types.find(([bits]) => bits === t)?.[1] ?? "unknown";
}

const VMA_FILE_PRIVATE = 1 << 6;
const VMA_FILE_SHARED = 1 << 7;
const VMA_AREA_MEMFD = 1 << 14;

const num = (v: unknown): number => (typeof v === "number" ? v : 0);
const optNum = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);
const obj = (v: unknown): Record<string, unknown> =>
  typeof v === "object" && v !== null ? (v as Record<string, unknown>) : {};

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Read an image that must be of kind `kind` and hold at least one entry. */
async function readKind(path: string, kind: string): Promise<CriuImage> {
  const image = await readImage(path);
  expectKind(image, kind);
  return image;
}

async function firstEntry(path: string, kind: string): Promise<Record<string, unknown>> {
  const image = await readKind(path, kind);
  if (image.entries.length === 0) {
    throw new ImageError(path, image.header.length, `${kind} image has no entries`);
  }
  return decodeEntry(image, 0);
}

/**
 * The file table of a dump: files.img of CRIU >= 3.x, and/or legacy reg-files.img (whose
 * entries are bare reg_file_entry messages, all regular files).
 */
export async function loadFileTable(dir: string): Promise<Map<number, FileEntry>> {
  const table = new Map<number, FileEntry>();
  const filesPath = join(dir, "files.img");
  const legacyPath = join(dir, "reg-files.img");
  const haveFiles = await exists(filesPath);
  const haveLegacy = await exists(legacyPath);
  if (!haveFiles && !haveLegacy) {
    throw new UserError(`${dir}: no files.img or reg-files.img in the images directory`);
  }
  if (haveLegacy) {
    for (const reg of decodeEntries(await readKind(legacyPath, "REG_FILES"))) {
      table.set(num(reg.id), { id: num(reg.id), kind: "reg", reg });
    }
  }
  if (haveFiles) {
    for (const e of decodeEntries(await readKind(filesPath, "FILES"))) {
      const kind = FD_KINDS[num(e.type)] ?? `type${num(e.type)}`;
      const entry: FileEntry = { id: num(e.id), kind };
      if (e.reg) entry.reg = obj(e.reg);
      for (const key of ["pipe", "fifo", "usk", "tty", "memfd"]) {
        if (e[key]) entry.sub = obj(e[key]);
      }
      table.set(entry.id, entry);
    }
  }
  return table;
}

function pathOf(table: Map<number, FileEntry>, id: number): string | undefined {
  const e = table.get(id);
  if (!e) return undefined;
  if (e.reg) return normalizeAbsolute(String(e.reg.name));
  const sub = e.sub ?? {};
  switch (e.kind) {
    case "fifo":
    case "tty":
      return sub.regf_id === undefined ? undefined : pathOf(table, num(sub.regf_id));
    case "pipe":
      return `pipe:[${num(sub.pipe_id)}]`;
    case "unixsk": {
      const name = sub.name instanceof Uint8Array ? Buffer.from(sub.name) : Buffer.alloc(0);
      if (name.length === 0) return `socket:[${num(sub.ino)}]`;
      return name[0] === 0 ? `@${name.subarray(1).toString("utf8")}` : name.toString("utf8");
    }
    case "memfd":
      return `memfd:${num(sub.inode_id)}`;
    default:
      return undefined;
  }
}

/**
 * CRIU's version from the head of a `*.log` in the directory (LOG_HEAD_BYTES of each, regular
 * files only): a log that is unreadable (CRIU writes them 0600), a FIFO or a device is skipped.
 */
async function findCriuVersion(dir: string): Promise<string | undefined> {
  const { readdir } = await import("node:fs/promises");
  for (const name of (await readdir(dir)).filter((n) => n.endsWith(".log")).sort()) {
    let head: string;
    try {
      head = (await readHead(join(dir, name), LOG_HEAD_BYTES, "log")).toString("utf8");
    } catch (err) {
      if (err instanceof UnreadableFileError) continue;
      throw err;
    }
    const m = /Version: (\S+)/.exec(head);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * The tasks of pstree.img: at most MAX_TASKS, each pid once (a repeated task would be read
 * again and again: a 40,000-fold repetition is refused at once instead).
 */
function pstreeTasks(image: CriuImage): Record<string, unknown>[] {
  if (image.entries.length > MAX_TASKS) {
    throw new ImageError(
      image.file,
      image.entries[MAX_TASKS]!.offset,
      `more than ${MAX_TASKS} tasks (MAX_TASKS)`,
    );
  }
  const seen = new Set<number>();
  return image.entries.map((entry, i) => {
    const task = decodeEntry(image, i);
    const pid = num(task.pid);
    if (seen.has(pid)) {
      throw new ImageError(image.file, entry.offset, `task ${pid} appears more than once`);
    }
    seen.add(pid);
    return task;
  });
}

/** Load the model of the dump in `dir`. Malformed images throw an ImageError (a UserError). */
export async function loadDump(dir: string): Promise<DumpModel> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new UserError(`${dir}: not a directory`);
  } catch (err) {
    if (err instanceof UserError) throw err;
    if (errnoCode(err) === "ENOENT") throw new UserError(`${dir}: no such directory`);
    throw new UserError(`${dir}: cannot read images directory (${errnoCode(err)})`);
  }
  const inventory = await firstEntry(join(dir, "inventory.img"), "INVENTORY");
  const pstreePath = join(dir, "pstree.img");
  const pstree = pstreeTasks(await readKind(pstreePath, "PSTREE"));
  if (pstree.length === 0) throw new ImageError(pstreePath, 8, "process tree has no tasks");
  const table = await loadFileTable(dir);
  const files = new Map<string, FileRef>();
  const use = (id: number, u: FileUse) => {
    const e = table.get(id);
    if (!e?.reg) return;
    // `.`/`..` in a name are resolved lexically: a crafted `/x/../../etc/y` is `/etc/y`.
    const path = normalizeAbsolute(String(e.reg.name));
    let ref = files.get(path);
    if (!ref) {
      ref = { path, type: "unknown", fileIds: [], usedBy: [] };
      files.set(path, ref);
    }
    // Several ids may name one path (e.g. an fd and a mapping); CRIU records mode and size
    // only on some of them, so take them from whichever entry has them.
    const mode = optNum(e.reg.mode);
    if (ref.mode === undefined && mode !== undefined) {
      ref.mode = mode;
      ref.type = fileType(mode);
    }
    if (ref.size === undefined && e.reg.size !== undefined) ref.size = num(e.reg.size);
    if (!ref.fileIds.includes(id)) ref.fileIds.push(id);
    ref.usedBy.push(u);
  };

  const tasks: TaskModel[] = [];
  for (const p of pstree) {
    const pid = num(p.pid);
    const core = await firstEntry(join(dir, `core-${pid}.img`), "CORE");
    const tc = obj(core.tc);
    let ids = core.ids === undefined ? undefined : obj(core.ids);
    const idsPath = join(dir, `ids-${pid}.img`);
    if (!ids && (await exists(idsPath))) ids = await firstEntry(idsPath, "IDS");
    const task: TaskModel = {
      pid,
      ppid: num(p.ppid),
      pgid: num(p.pgid),
      sid: num(p.sid),
      threads: Array.isArray(p.threads) ? p.threads.map(num) : [],
      comm: String(tc.comm ?? ""),
      fds: [],
      mappings: [],
    };

    const fdinfoName =
      inventory.fdinfo_per_id && ids ? `fdinfo-${num(ids.files_id)}.img` : `fdinfo-${pid}.img`;
    for (const fi of decodeEntries(await readKind(join(dir, fdinfoName), "FDINFO"))) {
      const fileId = num(fi.id);
      const entry = table.get(fileId);
      const src = entry?.reg ?? entry?.sub ?? {};
      const flags = num(src.flags);
      const fd: FdModel = {
        fd: num(fi.fd),
        kind: FD_KINDS[num(fi.type)] ?? `type${num(fi.type)}`,
        fileId,
        flags,
        flagsText: openFlagsText(flags),
        fdFlags: num(fi.flags),
      };
      const path = pathOf(table, fileId);
      if (path !== undefined) fd.path = path;
      if (src.pos !== undefined) fd.pos = num(src.pos);
      if (entry?.reg?.size !== undefined) fd.size = num(entry.reg.size);
      if (entry?.reg?.mode !== undefined) fd.mode = num(entry.reg.mode);
      task.fds.push(fd);
      use(fileId, { pid, use: "fd", fd: fd.fd });
    }
    task.fds.sort((a, b) => a.fd - b.fd);

    const mm = await firstEntry(join(dir, `mm-${pid}.img`), "MM");
    const exeId = num(mm.exe_file_id);
    const exe = pathOf(table, exeId);
    if (exe !== undefined) task.exe = exe;
    use(exeId, { pid, use: "exe" });
    for (const v of Array.isArray(mm.vmas) ? mm.vmas.map(obj) : []) {
      const status = num(v.status);
      if (!(status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED)) || status & VMA_AREA_MEMFD) continue;
      const fileId = num(v.shmid);
      const path = pathOf(table, fileId);
      if (path === undefined) continue;
      const start = num(v.start);
      task.mappings.push({
        path,
        fileId,
        start,
        end: num(v.end),
        pgoff: num(v.pgoff),
        prot: num(v.prot),
        protText: protText(num(v.prot)),
        flags: num(v.flags),
        shared: (status & VMA_FILE_SHARED) !== 0,
      });
      use(fileId, { pid, use: "map", start });
    }

    const fsPath = join(dir, `fs-${pid}.img`);
    if (await exists(fsPath)) {
      const fs = await firstEntry(fsPath, "FS");
      const cwd = pathOf(table, num(fs.cwd_id));
      const root = pathOf(table, num(fs.root_id));
      if (cwd !== undefined) task.cwd = cwd;
      if (root !== undefined) task.root = root;
      use(num(fs.cwd_id), { pid, use: "cwd" });
      use(num(fs.root_id), { pid, use: "root" });
    }
    tasks.push(task);
  }
  const model: DumpModel = { dir, imgVersion: num(inventory.img_version), tasks, files: [] };
  if (typeof inventory.dump_criu_run_id === "string" && inventory.dump_criu_run_id) {
    model.criuRunId = inventory.dump_criu_run_id;
  }
  const version = await findCriuVersion(dir);
  if (version) model.criuVersion = version;
  model.files = [...files.values()].sort((a, b) =>
    a.path < b.path ? -1 : a.path > b.path ? 1 : 0,
  );
  return model;
}
