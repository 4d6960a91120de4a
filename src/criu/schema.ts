/**
 * Our own protobuf schema for the CRIU image messages LazyFS reads. Field numbers and types
 * follow CRIU's `images/*.proto`; only the fields LazyFS uses are declared (plus the required
 * scalars around them). Undeclared fields are skipped when decoding and are never lost when
 * writing, because writers splice at the wire level (see wire.ts) instead of re-encoding.
 * Enums are declared as uint32 so that values newer than this schema still decode.
 * Kept as a string constant so that the compiled CLI needs no data files at run time.
 */
import protobuf from "protobufjs";

export const CRIU_PROTO = `
syntax = "proto2";

message task_kobj_ids_entry {
  required uint32 vm_id = 1;
  required uint32 files_id = 2;
  required uint32 fs_id = 3;
  required uint32 sighand_id = 4;
  optional uint32 pid_ns_id = 5;
  optional uint32 net_ns_id = 6;
  optional uint32 ipc_ns_id = 7;
  optional uint32 uts_ns_id = 8;
  optional uint32 mnt_ns_id = 9;
  optional uint32 user_ns_id = 10;
  optional uint32 cgroup_ns_id = 11;
  optional uint32 time_ns_id = 12;
}

message inventory_entry {
  required uint32 img_version = 1;
  optional bool fdinfo_per_id = 2;
  optional task_kobj_ids_entry root_ids = 3;
  optional bool ns_per_id = 4;
  optional uint32 root_cg_set = 5;
  optional uint32 lsmtype = 6;
  optional uint64 dump_uptime = 8;
  optional uint32 pre_dump_mode = 9;
  optional bool tcp_close = 10;
  optional uint32 network_lock_method = 11;
  optional string dump_criu_run_id = 13;
  optional bool allow_uprobes = 14;
}

message pstree_entry {
  required uint32 pid = 1;
  required uint32 ppid = 2;
  required uint32 pgid = 3;
  required uint32 sid = 4;
  repeated uint32 threads = 5;
}

message task_core_entry {
  required uint32 task_state = 1;
  required uint32 exit_code = 2;
  required uint32 personality = 3;
  required uint32 flags = 4;
  required uint64 blk_sigset = 5;
  required string comm = 6;
  optional uint32 cg_set = 9;
  optional uint32 loginuid = 13;
  optional int32 oom_score_adj = 14;
  optional bool child_subreaper = 18;
}

message thread_core_entry {
  required uint64 futex_rla = 1;
  required uint32 futex_rla_len = 2;
  optional sint32 sched_nice = 3;
  optional uint32 sched_policy = 4;
  optional uint32 sched_prio = 5;
  optional string comm = 13;
}

message core_entry {
  required uint32 mtype = 1;
  optional task_core_entry tc = 3;
  optional task_kobj_ids_entry ids = 4;
  optional thread_core_entry thread_core = 5;
}

message file_lock_entry {
  required uint32 flag = 1;
  required uint32 type = 2;
  required int32 pid = 3;
  required int32 fd = 4;
  required int64 start = 5;
  required int64 len = 6;
}

message fdinfo_entry {
  required uint32 id = 1;
  required uint32 flags = 2;
  required uint32 type = 3;
  required uint32 fd = 4;
  optional string xattr_security_selinux = 5;
}

message fown_entry {
  required uint32 uid = 1;
  required uint32 euid = 2;
  required uint32 signum = 3;
  required uint32 pid_type = 4;
  required uint32 pid = 5;
}

message reg_file_entry {
  required uint32 id = 1;
  required uint32 flags = 2;
  required uint64 pos = 3;
  required fown_entry fown = 5;
  required string name = 6;
  optional sint32 mnt_id = 7 [default = -1];
  optional uint64 size = 8;
  optional bool ext = 9;
  optional uint32 mode = 10;
  repeated uint32 build_id = 11;
  optional uint32 checksum = 12;
  optional uint32 checksum_config = 13;
  optional uint32 checksum_parameter = 14;
}

message pipe_entry {
  required uint32 id = 1;
  required uint32 pipe_id = 2;
  required uint32 flags = 3;
}

message fifo_entry {
  required uint32 id = 1;
  required uint32 pipe_id = 2;
  optional uint32 regf_id = 3;
}

message unix_sk_entry {
  required uint32 id = 1;
  required uint32 ino = 2;
  required uint32 type = 3;
  required uint32 state = 4;
  required uint32 flags = 5;
  required bytes name = 11;
  optional string name_dir = 14;
  optional bool deleted = 15;
}

message tty_file_entry {
  required uint32 id = 1;
  required uint32 tty_info_id = 2;
  required uint32 flags = 3;
  optional uint32 regf_id = 6;
}

message memfd_file_entry {
  required uint32 id = 1;
  required uint32 flags = 2;
  required uint64 pos = 3;
  required uint32 inode_id = 5;
}

message memfd_inode_entry {
  required string name = 1;
  required uint32 uid = 2;
  required uint32 gid = 3;
  required uint64 size = 4;
  required uint32 shmid = 5;
  required uint32 seals = 6;
  required uint64 inode_id = 7;
  optional uint32 mode = 9;
}

message file_entry {
  required uint32 type = 1;
  required uint32 id = 2;
  optional reg_file_entry reg = 3;
  optional unix_sk_entry usk = 16;
  optional fifo_entry fifo = 17;
  optional pipe_entry pipe = 18;
  optional tty_file_entry tty = 19;
  optional memfd_file_entry memfd = 20;
}

message vma_entry {
  required uint64 start = 1;
  required uint64 end = 2;
  required uint64 pgoff = 3;
  required uint64 shmid = 4;
  required uint32 prot = 5;
  required uint32 flags = 6;
  required uint32 status = 7;
  required sint64 fd = 8;
  optional uint64 madv = 9;
  optional uint32 fdflags = 10;
}

message mm_entry {
  required uint64 mm_start_code = 1;
  required uint64 mm_end_code = 2;
  required uint64 mm_start_data = 3;
  required uint64 mm_end_data = 4;
  required uint64 mm_start_stack = 5;
  required uint64 mm_start_brk = 6;
  required uint64 mm_brk = 7;
  required uint64 mm_arg_start = 8;
  required uint64 mm_arg_end = 9;
  required uint64 mm_env_start = 10;
  required uint64 mm_env_end = 11;
  required uint32 exe_file_id = 12;
  repeated vma_entry vmas = 14;
  optional int32 dumpable = 15;
}

message fs_entry {
  required uint32 cwd_id = 1;
  required uint32 root_id = 2;
  optional uint32 umask = 3;
}

message ghost_file_entry {
  required uint32 uid = 1;
  required uint32 gid = 2;
  required uint32 mode = 3;
  optional uint32 dev = 4;
  optional uint64 ino = 5;
  optional bool chunks = 9;
  optional uint64 size = 10;
}

message pagemap_head {
  required uint32 pages_id = 1;
}

message pagemap_entry {
  required uint64 vaddr = 1;
  required uint32 compat_nr_pages = 2;
  optional bool in_parent = 3;
  optional uint32 flags = 4;
  optional uint64 nr_pages = 5;
}
`;

let root: protobuf.Root | undefined;

/** The message type `name` of our schema (parsed once). */
export function messageType(name: string): protobuf.Type {
  root ??= protobuf.parse(CRIU_PROTO, { keepCase: true }).root;
  return root.lookupType(name);
}

/** Decode `bytes` as message `name` into a plain object (64-bit integers as numbers). */
export function decodeMessage(name: string, bytes: Uint8Array): Record<string, unknown> {
  const type = messageType(name);
  return type.toObject(type.decode(bytes), { longs: Number, bytes: Buffer, defaults: false });
}

/** Encode a plain object as message `name` (used by tests and for brand-new entries only). */
export function encodeMessage(name: string, value: Record<string, unknown>): Uint8Array {
  const type = messageType(name);
  return type.encode(type.fromObject(value)).finish();
}

/**
 * Parses the schema and generates every message's codec now rather than on first use
 * (protobufjs compiles them lazily): `migrate` calls it before the process is frozen.
 */
export function warmUpCodec(): void {
  messageType("inventory_entry");
  for (const t of Object.values(root!.nested ?? {})) {
    if (t instanceof protobuf.Type) {
      t.setup();
      t.toObject(t.create(), { longs: Number, bytes: Buffer, defaults: false });
    }
  }
}
