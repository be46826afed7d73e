import { VDomModel } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, FlowApi, IDag, IPlanStep, IRun, IRunOptions, IRunQuery, IServerInfo } from './api';
import { RunFollower } from './follow';
import { VERSION } from './version';
import { vocabulary } from './vocabulary';

/** The history's filters: whose runs (mine, everyone's, or one user's), which status, which page. */
export interface IHistoryFilter {
  who: 'mine' | 'everyone' | 'user';
  user: string; // with who = 'user'
  status: string; // '' for any
  pages: string[]; // the last run of each page before this one: the server lists from the last ([] on page 1)
}

export const PAGE_SIZE = 50;

/**
 * What the sidebar shows for the active notebook: its DAG (of the saved file, or of the unsaved
 * edits), the plan of its next run, its runs, the selected run (pushed by the server while it runs)
 * and the last message.
 */
export class FlowModel extends VDomModel {
  readonly api = new FlowApi();
  info: IServerInfo | null = null;
  path: string | null = null;
  dag: IDag | null = null;
  runs: IRun[] = [];
  /** The filters the history asks for, and the query its `runs` answered (the list shows it when they match). */
  filter: IHistoryFilter = { who: 'mine', user: '', status: '', pages: [] };
  shownQuery = '';
  moreRuns = false;
  selectedStep: string | null = null;
  busy = false;
  message = '';
  /** Per step, what Run would do with the saved notebook and the Run form's parameters, and why. */
  plan: Map<string, IPlanStep> | null = null;
  planMessage = '';
  private _planParameters: Record<string, unknown> = {};
  private _unsaved: unknown = undefined; // the notebook's content while it differs from the file
  private _planRequest = 0;
  private _runsRequest = 0;
  private _planTimer = 0;
  private _run = new RunFollower(this.api);
  private _finished = new Signal<this, IRun>(this);

  constructor() {
    super();
    this._run.changed.connect(() => this.stateChanged.emit());
    this._run.ended.connect(() => void this.refreshRuns());
  }

  /** A run started or resumed from this browser ended. */
  get finished(): ISignal<this, IRun> {
    return this._finished;
  }

  async connect(): Promise<void> {
    try {
      const [info, words] = await Promise.all([this.api.info(), this.api.vocabulary()]);
      this.info = info;
      vocabulary.set(words);
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
    this.plan = null;
    this._planParameters = {};
    this._unsaved = undefined;
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
    this._unsaved = undefined; // what is saved is what the notebook shows
    try {
      this.dag = await this.api.dag(path);
      this.message = '';
    } catch (e) {
      this.dag = null;
      return this.fail(e);
    }
    await Promise.all([this.refreshRuns(), this.refreshPlan()]);
    if (!this.run && this.runs.length) {
      this.select(this.runs[0].id);
    }
    this.stateChanged.emit();
  }

  async refreshRuns(): Promise<void> {
    if (!this.dag) {
      return;
    }
    const query = this.query();
    const request = ++this._runsRequest;
    try {
      const page = await this.api.runs(query);
      if (request === this._runsRequest) {
        // the newest request wins
        this.runs = page.runs;
        this.moreRuns = page.more;
        this.shownQuery = JSON.stringify(query);
      }
    } catch (e) {
      this.fail(e);
    }
    this.stateChanged.emit();
  }

  /** The GET runs query of the history's filters. */
  query(): IRunQuery {
    const f = this.filter;
    const user = f.who === 'mine' ? this.info?.user : f.who === 'user' ? f.user.trim() || undefined : undefined;
    const before = f.pages.length ? f.pages[f.pages.length - 1] : undefined;
    return { flow: this.dag?.flow, user, status: f.status || undefined, limit: PAGE_SIZE, before };
  }

  /** Change the history's filters (back to the first page unless `pages` is given) and list again. */
  setFilter(change: Partial<IHistoryFilter>): void {
    this.filter = { ...this.filter, pages: [], ...change };
    this.stateChanged.emit();
    void this.refreshRuns();
  }

  /** Ask the server what the next run would do; the newest request wins. */
  async refreshPlan(): Promise<void> {
    const path = this.path;
    const request = ++this._planRequest;
    if (!path) {
      return;
    }
    let plan: Map<string, IPlanStep> | null = null;
    let message = '';
    try {
      const steps = await this.api.plan(path, this._planParameters, this._unsaved);
      plan = new Map(steps.map(step => [step.step, step]));
    } catch (e) {
      message = `No plan: ${(e as Error).message}`;
    }
    if (request === this._planRequest && path === this.path) {
      this.plan = plan;
      this.planMessage = message;
      this.stateChanged.emit();
    }
  }

  /** The Run form's parameters changed: plan with them once the typing pauses. */
  setPlanParameters(parameters: Record<string, unknown>): void {
    if (JSON.stringify(parameters) === JSON.stringify(this._planParameters)) {
      return;
    }
    this._planParameters = parameters;
    window.clearTimeout(this._planTimer);
    this._planTimer = window.setTimeout(() => void this.refreshPlan(), 300);
  }

  selectStep(step: string | null): void {
    this.selectedStep = step;
    this.stateChanged.emit();
  }

  /** Show a run, kept fresh by the server's pushed events until it ends. */
  select(id: string | null): void {
    if (this.run?.id !== id) {
      this.selectedStep = null;
    }
    this._run.follow(id);
  }

  get run(): IRun | null {
    return this._run.run;
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

  /** Start or resume a run, then show it and follow it live; tell `finished` when it ends. */
  private async launch(request: () => Promise<{ id: string }>): Promise<void> {
    try {
      const { id } = await request();
      this.select(id); // its stream opens now; the history catches up beside it
      void this.refreshRuns();
      const watch = new RunFollower(this.api);
      watch.ended.connect((_, run) => {
        void this.refreshPlan();
        this._finished.emit(run);
        watch.dispose();
      });
      watch.follow(id);
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

  /** Show the DAG and plan of the notebook's unsaved content (the saved file's stay on a parse error). */
  async edited(content: unknown): Promise<void> {
    const path = this.path;
    if (!path) {
      return;
    }
    this._unsaved = content;
    void this.refreshPlan();
    try {
      const dag = await this.api.liveDag(path, content);
      if (path === this.path) {
        this.dag = dag;
        this.message = '';
      }
    } catch (e) {
      this.message = (e as Error).message;
    }
    this.stateChanged.emit();
  }

  dispose(): void {
    window.clearTimeout(this._planTimer);
    this._run.dispose();
    super.dispose();
  }
}
