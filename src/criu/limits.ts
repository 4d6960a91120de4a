/**
 * Bounds on what the image codec and `inspect` read, so that a hostile or broken images
 * directory costs bounded time and memory (a 40,000-fold repeated task, a 300 MB log, an image
 * that is a symlink to /dev/zero). Anything over a limit is refused with one line naming the
 * file; nothing is read past it.
 */

/** Largest image file read whole (files.img of ~500,000 open files stays well below). */
export const MAX_IMAGE_BYTES = 64 * 1024 * 1024;

/** Largest number of entries parsed from one image file. */
export const MAX_IMAGE_ENTRIES = 1 << 20;

/** Largest number of tasks (pstree.img entries) in one dump: a process tree, not a host. */
export const MAX_TASKS = 1 << 16;

/** How much of a CRIU `*.log` is read for its version line (which is at its start). */
export const LOG_HEAD_BYTES = 4096;

/** How much of a log is read for error lines: its tail (CRIU's errors are at the end). */
export const LOG_TAIL_BYTES = 64 * 1024;
