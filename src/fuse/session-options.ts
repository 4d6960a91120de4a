/**
 * What a `Session` is configured with (`SessionOptions`), and what INIT agreed on its
 * connection (`Negotiated`), which a server taking the connection over keeps to. Types only,
 * apart from the session, so that mount, handover and supervisor can name them.
 */

export interface SessionOptions {
  /** Largest WRITE (and READ) request, bytes; default 1 MiB (max_pages 256). */
  maxWrite?: number;
  /** Worker threads blocked in read(2) on the device; default 2. */
  readers?: number;
  /** Requests each reader can have in flight; default 16. */
  slotsPerReader?: number;
  /** Let the kernel cache writes and send them in big batches; default false. */
  writebackCache?: boolean;
  /** Answer READDIRPLUS (readdir + lookup per entry); default true. */
  readdirplus?: boolean;
  /** Kernel invalidates cached data when it sees mtime/size change; default false. */
  autoInvalData?: boolean;
  /** Default entry/attr cache timeouts, ms; default 1000. */
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
  /** Max background (readahead/writeback) requests the kernel queues; default 64. */
  maxBackground?: number;
  /**
   * Open handles with a `backingFd` that the reader threads serve directly; default 4096.
   * Handles beyond that are still served from their backing fd, by the main thread.
   */
  backingHandles?: number;
  /**
   * Write-behind for backing fds: after this many bytes written through the fast path to one
   * backing fd, start flushing it to disk (fdatasync in the libuv pool, one at a time per fd)
   * while writing goes on, so that a later fsync has little left to do and dirty data stays
   * bounded. 0 (default) leaves flushing to the kernel and to FSYNC.
   */
  writeBehindBytes?: number;
  /**
   * Kernel passthrough (Linux >= 6.9, CAP_SYS_ADMIN, koffi): opens whose reply sets
   * `passthrough` are served by the kernel from their backing fd. Negotiating it turns the
   * writeback cache off (the kernel allows only one of the two). Default false; the
   * environment variable LAZYFS_FUSE_PASSTHROUGH=0 turns it off whatever the option says.
   */
  passthrough?: boolean;
  /**
   * Where the passthrough table is kept for a server that takes this connection over (a
   * supervised server gets it from its supervisor); none: a restarted server cannot go on
   * with the passthrough opens its predecessor left.
   */
  passthroughStateFile?: string;
  /**
   * Serve a connection whose INIT an earlier server already answered (a server restarted by a
   * supervisor, see supervisor.ts): no INIT is expected, these parameters are in effect, and
   * the kernel is asked to resend every request the earlier server read and did not answer.
   */
  resume?: Negotiated;
}

/** What INIT agreed on a connection: what a server taking it over must keep to. */
export interface Negotiated {
  minor: number;
  /** Flags in effect. */
  flags: bigint;
  /** Flags the kernel offered. */
  kernelFlags: bigint;
  maxWrite: number;
}
