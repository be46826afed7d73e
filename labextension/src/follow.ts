import { ISignal, Signal } from '@lumino/signaling';

import { FlowApi, IRun } from './api';

/**
 * One run kept fresh by the server's pushed `run` events, until it ends. `changed` fires on every
 * new state, `ended` once when
 * the run is seen over (at once for a run that had ended before).
 */
export class RunFollower {
  run: IRun | null = null;
  private _stop: (() => void) | null = null;
  private _changed = new Signal<this, IRun | null>(this);
  private _ended = new Signal<this, IRun>(this);

  constructor(private _api: FlowApi) {}

  get changed(): ISignal<this, IRun | null> {
    return this._changed;
  }

  get ended(): ISignal<this, IRun> {
    return this._ended;
  }

  /** Follow another run (or none). */
  follow(id: string | null): void {
    this._stop?.();
    this._stop = null;
    if (this.run?.id !== id) {
      this.run = null;
      this._changed.emit(null);
    }
    if (id) {
      this._stop = this._api.runEvents(id, run => {
        const ended = run.status !== 'running' && (!this.run || this.run.status === 'running');
        this.run = run;
        this._changed.emit(run);
        if (ended) {
          this._ended.emit(run);
        }
      });
    }
  }

  dispose(): void {
    this.follow(null);
    Signal.clearData(this);
  }
}
