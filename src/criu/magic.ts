/**
 * The table that drives the codec (as in pycriu): image magic -> name, message type of its
 * entries, and how to find the extra payload some entries carry. Values from CRIU's
 * criu/include/magic.h; layout facts from lib/pycriu/images/images.py.
 */
import { varintField } from "./wire.js";

export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;
export const INVENTORY_MAGIC = 0x58313116;

/**
 * Length in bytes of the extra payload that follows entry `payload` at `pos` of `file`
 * (`end` is the end of the file). Throws a WireError for a malformed payload.
 */
export type ExtraLength = (payload: Uint8Array, file: Uint8Array, pos: number) => number;

export interface ImageKind {
  name: string;
  magic: number;
  /** Message type of entries in our schema; undefined when LazyFS does not decode them. */
  message?: string;
  /** Message type of the first entry, when it differs (pagemap's head). */
  headMessage?: string;
  extra?: ExtraLength;
}

const roundUp = (x: number, to: number) => Math.ceil(x / to) * to;
const field = (payload: Uint8Array, n: number) => Number(varintField(payload, n) ?? 0n);

/** Extra = the number of bytes in varint field(s) `numbers` of the entry. */
const bytesIn =
  (...numbers: number[]): ExtraLength =>
  (payload) =>
    numbers.reduce((sum, n) => sum + field(payload, n), 0);

/** ipc_msg_entry: qnum x (u32 size, ipc_msg, msize bytes rounded up to 8). */
const ipcMsgExtra: ExtraLength = (payload, file, pos) => {
  const qnum = field(payload, 3);
  let p = pos;
  for (let i = 0; i < qnum; i++) {
    if (p + 4 > file.length) return file.length + 1 - pos;
    const size = Buffer.from(file.buffer, file.byteOffset, file.length).readUInt32LE(p);
    const msg = file.subarray(p + 4, p + 4 + size);
    p += 4 + size + roundUp(field(msg, 2), 8);
  }
  return p - pos;
};

const KINDS: ImageKind[] = [
  { name: "INVENTORY", magic: INVENTORY_MAGIC, message: "inventory_entry" },
  { name: "PSTREE", magic: 0x50273030, message: "pstree_entry" },
  { name: "FDINFO", magic: 0x56213732, message: "fdinfo_entry" },
  {
    name: "PAGEMAP",
    magic: 0x56084025,
    headMessage: "pagemap_head",
    message: "pagemap_entry",
  },
  { name: "CORE", magic: 0x55053847, message: "core_entry" },
  { name: "IDS", magic: 0x54432030, message: "task_kobj_ids_entry" },
  { name: "VMAS", magic: 0x54123737, message: "vma_entry" },
  { name: "PIPES", magic: 0x56513555, message: "pipe_entry" },
  { name: "PIPES_DATA", magic: 0x56453709, extra: bytesIn(2) },
  { name: "FIFO", magic: 0x58364939, message: "fifo_entry" },
  { name: "FIFO_DATA", magic: 0x59333054, extra: bytesIn(2) },
  { name: "SIGACT", magic: 0x55344201 },
  { name: "UNIXSK", magic: 0x54373943, message: "unix_sk_entry" },
  { name: "INETSK", magic: 0x56443851 },
  { name: "PACKETSK", magic: 0x60454618 },
  { name: "ITIMERS", magic: 0x57464056 },
  { name: "POSIX_TIMERS", magic: 0x52603957 },
  { name: "SK_QUEUES", magic: 0x56264026, extra: bytesIn(2) },
  { name: "UTSNS", magic: 0x54473203 },
  { name: "CREDS", magic: 0x54023547 },
  { name: "IPC_VAR", magic: 0x53115007 },
  { name: "IPCNS_SHM", magic: 0x46283044, extra: (p) => roundUp(field(p, 2), 4) },
  { name: "IPCNS_MSG", magic: 0x55453737, extra: ipcMsgExtra },
  { name: "IPCNS_SEM", magic: 0x59573019, extra: (p) => roundUp(2 * field(p, 2), 8) },
  { name: "REG_FILES", magic: 0x50363636, message: "reg_file_entry" },
  { name: "EXT_FILES", magic: 0x59255641 },
  { name: "FS", magic: 0x51403912, message: "fs_entry" },
  { name: "MM", magic: 0x57492820, message: "mm_entry" },
  { name: "REMAP_FPATH", magic: 0x59133954 },
  // Ghost files have their own layout; image.ts handles them by name.
  { name: "GHOST_FILE", magic: 0x52583605, message: "ghost_file_entry" },
  { name: "TCP_STREAM", magic: 0x51465506, extra: bytesIn(1, 3) },
  { name: "EVENTFD_FILE", magic: 0x44523722 },
  { name: "EVENTPOLL_FILE", magic: 0x45023858 },
  { name: "EVENTPOLL_TFD", magic: 0x44433746 },
  { name: "SIGNALFD", magic: 0x57323820 },
  { name: "INOTIFY_FILE", magic: 0x48424431 },
  { name: "INOTIFY_WD", magic: 0x54562009 },
  { name: "MNTS", magic: 0x55563928 },
  { name: "NETDEV", magic: 0x57373951 },
  { name: "NETNS", magic: 0x55933752 },
  { name: "TTY_FILES", magic: 0x59433025, message: "tty_file_entry" },
  { name: "TTY_INFO", magic: 0x59453036 },
  { name: "TTY_DATA", magic: 0x59413026 },
  { name: "FILE_LOCKS", magic: 0x54323616, message: "file_lock_entry" },
  { name: "RLIMIT", magic: 0x57113925 },
  { name: "FANOTIFY_FILE", magic: 0x55096122 },
  { name: "FANOTIFY_MARK", magic: 0x56506035 },
  { name: "SIGNAL", magic: 0x59255647 },
  { name: "NETLINK_SK", magic: 0x58005614 },
  { name: "NS_FILES", magic: 0x61394011 },
  { name: "TUNFILE", magic: 0x57143751 },
  { name: "CGROUP", magic: 0x59383330 },
  { name: "TIMERFD", magic: 0x50493712 },
  { name: "CPUINFO", magic: 0x61404013 },
  { name: "USERNS", magic: 0x55474906 },
  { name: "SECCOMP", magic: 0x64413049 },
  { name: "BINFMT_MISC", magic: 0x67343323 },
  { name: "AUTOFS", magic: 0x49353943 },
  { name: "FILES", magic: 0x56303138, message: "file_entry" },
  { name: "MEMFD_INODE", magic: 0x48453499, message: "memfd_inode_entry" },
  { name: "TIMENS", magic: 0x43114433 },
  { name: "PIDNS", magic: 0x61157326 },
  { name: "BPFMAP_FILE", magic: 0x57506142 },
  { name: "BPFMAP_DATA", magic: 0x64324033, extra: bytesIn(2, 3) },
  { name: "APPARMOR", magic: 0x59423047 },
  { name: "PIDFD", magic: 0x54435556 },
  { name: "STATS", magic: 0x57093306 },
  { name: "IRMAP_CACHE", magic: 0x57004059 },
  { name: "KDAT", magic: 0x57023458 },
];

const byMagic = new Map(KINDS.map((k) => [k.magic, k]));
const byName = new Map(KINDS.map((k) => [k.name, k]));

export function kindByMagic(magic: number): ImageKind | undefined {
  return byMagic.get(magic);
}

export function kindByName(name: string): ImageKind {
  const kind = byName.get(name);
  if (!kind) throw new Error(`unknown image kind ${name}`);
  return kind;
}

/**
 * Images CRIU writes without any magic (RAW_IMAGE_MAGIC): page contents, network and tmpfs
 * dumps. They are opaque byte streams to LazyFS.
 */
export function isRawImageName(fileName: string): boolean {
  return /^(pages-|ifaddr-|route6?-|rule-|tmpfs-|iptables-|ip6tables-|nftables-|netns-ct-|netns-exp-)/.test(
    fileName,
  );
}
