import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IVocabulary } from './vocabulary';

/** Shapes of the JSON the server extension returns (see docs/internal-api.md). */
export interface IParameter {
  value: unknown;
  type: string;
  source?: string;
}

export interface IStepSpec {
  name: string;
  prev: string[];
  reads: string[];
  writes: string[];
  foreach?: string | null;
  options?: Record<string, unknown>;
  cells?: number[];
  edges: Record<string, string[]>;
}

export interface IDag {
  flow: string;
  path: string;
  parameters: Record<string, IParameter>;
  steps: IStepSpec[];
  warnings: string[];
}

/** What the next run would do with a step, and why (GET plan; jupyter_flow.runtime.plan). */
export interface IPlanStep {
  step: string;
  action: 'run' | 'reuse';
  reason: string;
  origin?: string | null; // the run whose task would be reused
}

export interface IValueInfo {
  hash?: string;
  type?: string;
  size?: number;
  preview?: unknown;
}

export interface ITaskError {
  type: string;
  message: string;
  cell?: number | null;
  source_cell?: number | null; // index of the cell in the source notebook
  traceback?: string | string[] | null;
}

export interface ITask {
  run_id: string;
  step: string;
  index: number;
  status: string;
  attempt: number;
  started?: string | null;
  ended?: string | null;
  duration?: number | null;
  inputs?: Record<string, IValueInfo>;
  outputs?: Record<string, IValueInfo>;
  error?: ITaskError | null;
  host?: string;
  executor?: string;
  notebook?: string;
  failure?: { frames?: IFrame[]; withheld?: Record<string, string> } | null; // withheld: name -> why (a secret)
  continued?: { run: string; cell: number; line: string } | null; // a resumed step run from its failing cell
}

/** A frame of a failed task's traceback (notebook code, or the first library frame under it). */
export interface IFrame {
  where: string; // "cell 3", or a library file
  function: string;
  line: number;
  notebook: boolean;
  locals: Record<string, string>; // name -> short preview (or why it was not stored)
}

export interface IRun {
  id: string;
  steps?: { name: string; prev: string[] }[]; // in notebook order
  flow: string;
  status: string;
  user: string;
  host?: string;
  notebook?: string;
  path?: string | null;
  parameters: Record<string, unknown>;
  created?: string;
  ended?: string | null;
  duration?: number | null;
  metrics?: Record<string, number>;
  origin_run?: string | null;
  executor?: string;
  error?: { step: string; index: number; message: string } | null;
  tasks?: ITask[];
  pinned?: IPin | null; // no gc removes a pinned run (jupyter flow pin)
}

/** A pin: who kept the run from every gc, when, and why. */
export interface IPin {
  run_id: string;
  by?: string;
  at?: string;
  note?: string | null;
}

/** Which runs the history lists (GET runs): user none = everyone's; a page of `limit` from `offset`,
 * of the runs older than the run id `before` (the last of the page before) if given. */
export interface IRunQuery {
  flow?: string;
  user?: string;
  status?: string;
  limit?: number;
  offset?: number;
  before?: string;
}

export interface IRunPage {
  runs: IRun[];
  more: boolean; // older runs follow
}

export interface IServerInfo {
  version: string;
  user: string;
  store: string;
  executor: string;
  scheduler?: string | null;
  executors: string[];
  read_only?: string | null; // why runs, resumes and pins are refused here (credentials that only read)
}

export interface IArtifacts {
  inputs: Record<string, IValueInfo>;
  outputs: Record<string, IValueInfo>;
  failure: { variables: Record<string, IValueInfo>; unpicklable: Record<string, unknown> } | null;
}

export interface IRunOptions {
  parameters?: Record<string, unknown>;
  executor?: string;
  scheduler?: string;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

/** What changed in a run since the last event (server/live.py RunChanges). */
interface IRunChange {
  run: Partial<IRun>; // fields that changed
  gone: string[]; // fields the run no longer has
  tasks: ITask[]; // tasks that are new or changed
}

/** `run` with `change` applied: a new object; its tasks by step (in notebook order) then index. */
export function applyChange(run: IRun, change: IRunChange): IRun {
  const merged: Record<string, unknown> = { ...run, ...change.run };
  change.gone.forEach(name => delete merged[name]);
  const next = merged as unknown as IRun;
  const tasks = new Map((run.tasks ?? []).map(t => [`${t.step}/${t.index}`, t]));
  change.tasks.forEach(t => tasks.set(`${t.step}/${t.index}`, t));
  const order = (next.steps ?? []).map(s => s.name);
  const rank = (t: ITask) => (order.includes(t.step) ? order.indexOf(t.step) : order.length);
  next.tasks = [...tasks.values()].sort(
    (a, b) => rank(a) - rank(b) || (a.step < b.step ? -1 : a.step > b.step ? 1 : 0) || a.index - b.index
  );
  return next;
}

/** One server stream of a run, shared by everything that shows that run. */
interface ISharedRun {
  listeners: Set<(run: IRun) => void>;
  last: IRun | null;
  close: () => void;
}

/** Client of /jupyter-flow/api/. Live state arrives as server-sent events (`stream`), never by polling. */
export class FlowApi {
  private _settings = ServerConnection.makeSettings();
  private _runs = new Map<string, ISharedRun>();

  private url(endpoint: string): string {
    return URLExt.join(this._settings.baseUrl, 'jupyter-flow/api', endpoint);
  }

  async request<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
    const response = await ServerConnection.makeRequest(this.url(endpoint), init, this._settings);
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) {
      throw new ApiError(data?.message ?? response.statusText, response.status);
    }
    return data as T;
  }

  /**
   * Listen to a server-sent-event stream: `on(name, data)` for each event, until the server says
   * `end` or the returned function is called. The browser reconnects by itself after a network error.
   */
  stream(endpoint: string, on: (event: string, data: any) => void, names: string[]): () => void {
    const token = this._settings.token;
    const source = new EventSource(this.url(endpoint) + (token ? `?token=${encodeURIComponent(token)}` : ''));
    for (const name of names) {
      source.addEventListener(name, e => on(name, JSON.parse((e as MessageEvent).data)));
    }
    source.addEventListener('end', () => source.close());
    return () => source.close();
  }

  private post<T>(endpoint: string, body: unknown): Promise<T> {
    return this.request<T>(endpoint, { method: 'POST', body: JSON.stringify(body) });
  }

  info(): Promise<IServerInfo> {
    return this.request('version');
  }

  /** The statuses, their order and colours, and the step-name rule (see vocabulary.ts). */
  vocabulary(): Promise<IVocabulary> {
    return this.request('vocabulary');
  }

  dag(path: string): Promise<IDag> {
    return this.request(`dag?path=${encodeURIComponent(path)}`);
  }

  /**
   * For each step: would a run reuse it or run it, and why, with these parameters; of the saved
   * notebook, or of its unsaved `content` if given.
   */
  async plan(path: string, parameters: Record<string, unknown>, content?: unknown): Promise<IPlanStep[]> {
    if (content !== undefined) {
      return (await this.post<{ steps: IPlanStep[] }>('plan/live', { path, content, parameters })).steps;
    }
    const query = new URLSearchParams({ path, parameters: JSON.stringify(parameters) });
    return (await this.request<{ steps: IPlanStep[] }>(`plan?${query}`)).steps;
  }

  /** The DAG of a notebook's unsaved content. */
  liveDag(path: string, content: unknown): Promise<IDag> {
    return this.post('dag/live', { path, content });
  }

  /**
   * The run with its tasks each time it changes, until it ends: the server sends the whole run once
   * (`run`), then only what changed (`change`), merged here. Every listener of a run shares one
   * stream (a browser opens few connections per server), and a new one gets the latest state at once.
   */
  runEvents(id: string, on: (run: IRun) => void): () => void {
    let entry = this._runs.get(id);
    if (!entry) {
      const shared: ISharedRun = { listeners: new Set(), last: null, close: () => undefined };
      shared.close = this.stream(
        `runs/${encodeURIComponent(id)}/events`,
        (name, data) => {
          const run = name === 'run' ? (data as IRun) : shared.last && applyChange(shared.last, data as IRunChange);
          if (run) {
            shared.last = run;
            shared.listeners.forEach(listener => listener(run));
          }
        },
        ['run', 'change']
      );
      this._runs.set(id, (entry = shared));
    }
    const shared = entry;
    shared.listeners.add(on);
    if (shared.last) {
      on(shared.last);
    }
    return () => {
      shared.listeners.delete(on);
      if (!shared.listeners.size) {
        shared.close();
        this._runs.delete(id);
      }
    };
  }

  /** `log` events: what the task printed since the last one, while it runs and when it ended. */
  logEvents(task: ITask, on: (text: string) => void): () => void {
    return this.stream(`${this.taskUrl(task, 'log')}/live`, (_, data) => on(data.text), ['log']);
  }

  runs(query: IRunQuery): Promise<IRunPage> {
    const params = new URLSearchParams();
    Object.entries(query).forEach(([k, v]) => v !== undefined && v !== '' && params.set(k, String(v)));
    return this.request<IRunPage>(`runs?${params}`);
  }

  /** Keep the run (and everything it needs) from every gc; the pin. */
  pin(id: string, note?: string): Promise<IPin> {
    return this.post(`runs/${encodeURIComponent(id)}/pin`, note ? { note } : {});
  }

  /** Let gc remove the run again; the pin it had. */
  unpin(id: string): Promise<IPin> {
    return this.request(`runs/${encodeURIComponent(id)}/pin`, { method: 'DELETE' });
  }

  run(id: string): Promise<IRun> {
    return this.request(`runs/${encodeURIComponent(id)}`);
  }

  start(path: string, options: IRunOptions): Promise<{ id: string }> {
    return this.post('runs', { path, ...options });
  }

  resume(id: string, options: IRunOptions = {}): Promise<{ id: string }> {
    return this.post(`runs/${encodeURIComponent(id)}/resume`, options);
  }

  cancel(id: string): Promise<unknown> {
    return this.post(`runs/${encodeURIComponent(id)}/cancel`, {});
  }

  private taskUrl(task: ITask, what: string): string {
    return `runs/${encodeURIComponent(task.run_id)}/tasks/${task.step}/${task.index}/${what}`;
  }

  artifacts(task: ITask): Promise<IArtifacts> {
    return this.request(this.taskUrl(task, 'artifacts'));
  }

  notebook(task: ITask): Promise<any> {
    return this.request(this.taskUrl(task, 'notebook'));
  }
}
