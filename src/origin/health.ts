/**
 * How an origin connection has fared: connections made, reconnects after the first, failed
 * requests (each failed attempt, also those retried), and the present state. Shown per origin
 * by `lazyfs status` and exported as metrics.
 */
export type ConnectionState = "idle" | "connecting" | "connected" | "disconnected" | "closed";

export interface OriginHealthFigures {
  connects: number;
  reconnects: number;
  errors: number;
  state: ConnectionState;
  lastErrorMs: number | null;
  lastError: string | null;
}

export class OriginHealth {
  private f: OriginHealthFigures = {
    connects: 0,
    reconnects: 0,
    errors: 0,
    state: "idle",
    lastErrorMs: null,
    lastError: null,
  };

  connecting(): void {
    if (this.f.state !== "closed") this.f.state = "connecting";
  }

  connected(): void {
    if (this.f.connects > 0) this.f.reconnects++;
    this.f.connects++;
    if (this.f.state !== "closed") this.f.state = "connected";
  }

  dropped(): void {
    if (this.f.state !== "closed") this.f.state = "disconnected";
  }

  error(message: string): void {
    this.f.errors++;
    this.f.lastErrorMs = Date.now();
    this.f.lastError = message;
  }

  closed(): void {
    this.f.state = "closed";
  }

  figures(): OriginHealthFigures {
    return { ...this.f };
  }
}
