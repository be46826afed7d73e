import { VDomModel } from '@jupyterlab/ui-components';

import { ApiError, FlowApi, IDag, IRun, IRunOptions, IServerInfo } from './api';
import { VERSION } from './version';

/**
 * What the sidebar shows for the active notebook: its DAG, its runs, the selected run (polled
 * while it is running, revalidated with ETags) and the last message for the user.
 */
export class FlowModel extends VDomModel {
  readonly api = new FlowApi();
  info: IServerInfo | null = null;
  path: string | null = null;
  dag: IDag | null = null;
  runs: IRun[] = [];
  run: IRun | null = null;
  allUsers = false;
  selectedStep: string | null = null;
  busy = false;
  message = '';
  private _timer: number | null = null;
  private _follow = 0;

  async connect(): Promise<void> {
    try {
      this.info = await this.api.info();
      if (this.info.version !== VERSION) {
        this.message =
          `jupyter-flow server ${this.info.version} and lab extension ${VERSION} differ: ` +
          'reinstall jupyter-flow and restart Jupyter.';
      }
    } catch (e) {
      this.message = `The jupyter-flow server extension is not reachable (${(e as Error).message}).`;
    }
    this.stateChanged.emit();
  }

  private fail(e: unknown): void {
    this.message = e instanceof ApiError || e instanceof Error ? e.message : String(e);
    this.busy = false;
    this.stateChanged.emit();
  }

  /** Follow another notebook (or none): load its DAG and history, show its latest run. */
  async setNotebook(path: string | null): Promise<void> {
    if (path === this.path) {
      return;
    }
    this.path = path;
    this.dag = null;
    this.runs = [];
    this.select(null);
    await this.refresh();
  }

  async refresh(): Promise<void> {
    const path = this.path;
    if (!path) {
      this.stateChanged.emit();
      return;
    }
    try {
      this.dag = await this.api.dag(path);
      this.message = '';
    } catch (e) {
      this.dag = null;
      return this.fail(e);
    }
    await this.refreshRuns();
    if (!this.run && this.runs.length) {
      this.select(this.runs[0].id);
    }
    this.stateChanged.emit();
  }

  async refreshRuns(): Promise<void> {
    if (!this.dag) {
      return;
    }
    const user = this.allUsers ? undefined : this.info?.user;
    try {
      this.runs = await this.api.runs({ flow: this.dag.flow, user, limit: 50 });
    } catch (e) {
      this.fail(e);
    }
    this.stateChanged.emit();
  }

  setAllUsers(all: boolean): void {
    this.allUsers = all;
    void this.refreshRuns();
  }

  selectStep(step: string | null): void {
    this.selectedStep = step;
    this.stateChanged.emit();
  }

  /** Show a run and keep it fresh until it ends. */
  select(id: string | null): void {
    this._follow += 1;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    if (!id) {
      this.run = null;
      this.stateChanged.emit();
      return;
    }
    if (this.run?.id !== id) {
      this.run = null;
      this.selectedStep = null;
    }
    void this.poll(id, this._follow);
  }

  private async poll(id: string, follow: number): Promise<void> {
    let run: IRun;
    try {
      run = await this.api.run(id);
    } catch (e) {
      this.fail(e);
      if (follow === this._follow && this.run?.status === 'running') {
        this._timer = window.setTimeout(() => void this.poll(id, follow), 2000); // keep following
      }
      return;
    }
    if (follow !== this._follow) {
      return; // another run was selected meanwhile
    }
    const changed = run !== this.run;
    const ended = this.run?.status === 'running' && run.status !== 'running';
    this.run = run;
    if (changed) {
      this.stateChanged.emit();
    }
    if (ended) {
      void this.refreshRuns();
    }
    if (run.status === 'running') {
      const delay = this.info?.poll_interval_ms ?? 400;
      this._timer = window.setTimeout(() => void this.poll(id, follow), delay);
    }
  }

  async start(options: IRunOptions): Promise<void> {
    if (!this.path) {
      return;
    }
    const path = this.path;
    this.busy = true;
    this.message = '';
    this.stateChanged.emit();
    await this.launch(() => this.api.start(path, options));
    this.busy = false;
    this.stateChanged.emit();
  }

  resume(run: IRun, options: IRunOptions = {}): Promise<void> {
    return this.launch(() => this.api.resume(run.id, options));
  }

  /** Start or resume a run, then show it and follow it live. */
  private async launch(request: () => Promise<{ id: string }>): Promise<void> {
    try {
      const { id } = await request();
      await this.refreshRuns();
      this.select(id);
    } catch (e) {
      this.fail(e);
    }
  }

  async cancel(run: IRun): Promise<void> {
    try {
      await this.api.cancel(run.id);
    } catch (e) {
      this.fail(e);
    }
  }

  /** The newest failed run of this notebook's flow, if any. */
  latestFailed(): IRun | undefined {
    return this.runs.find(r => r.status === 'failed' || r.status === 'crashed');
  }

  dispose(): void {
    this.select(null);
    super.dispose();
  }
}
