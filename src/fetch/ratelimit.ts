/**
 * Bandwidth cap: each origin read reserves its bytes on a virtual clock advancing at
 * `bytesPerSec`, and starts when its reservation ends, so no idle credit accumulates and the
 * long-run rate never exceeds the cap.
 */
export class RateLimiter {
  private next = 0;
  constructor(readonly bytesPerSec: number) {}

  async acquire(bytes: number): Promise<void> {
    if (!(this.bytesPerSec > 0)) return;
    const now = performance.now();
    this.next = Math.max(now, this.next) + (bytes / this.bytesPerSec) * 1000;
    const wait = this.next - now;
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  }
}
