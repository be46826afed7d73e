/**
 * The statuses and the step-name rule as the server defines them (jupyter_flow/store/status.py,
 * GET /jupyter-flow/api/vocabulary): which statuses there are, which are done or ended, which one a
 * step of several tasks shows, their colours, and what a step may be called. The extension keeps no
 * table of its own: until the server has answered (FlowModel.connect) the sets are empty.
 */

/** What GET vocabulary answers. */
export interface IVocabulary {
  statuses: string[]; // every status, in the server's order
  done: string[]; // a task whose outputs exist (succeeded first)
  terminal: string[];
  ended: string[]; // a task or run in one of these no longer changes
  run_statuses: string[]; // what a run can be: the history's status filter
  precedence: string[]; // the first of these a step's tasks have is the step's status
  colors: Record<string, string>; // HTML colours, with `not_run`'s
  not_run: string;
  step_name: string; // an anchored regular expression
}

class Vocabulary {
  done = new Set<string>();
  ended = new Set<string>();
  runStatuses: string[] = [];
  precedence: string[] = [];
  private _stepName: RegExp | null = null;

  /** Take the server's vocabulary; colour each status (`.jp-flow-status-NAME`) as it says. */
  set(v: IVocabulary): void {
    this.done = new Set(v.done);
    this.ended = new Set(v.ended);
    this.runStatuses = v.run_statuses;
    this.precedence = v.precedence;
    this._stepName = new RegExp(v.step_name);
    const rules = Object.entries(v.colors).map(
      ([status, color]) => `.jp-flow-status-${status === v.not_run ? 'none' : status} { --jp-flow-status: ${color}; }`
    );
    let sheet = document.getElementById('jp-flow-status-colors');
    if (!sheet) {
      sheet = document.createElement('style');
      sheet.id = 'jp-flow-status-colors';
      document.head.appendChild(sheet);
    }
    sheet.textContent = rules.join('\n');
  }

  /** Whether `name` may name a step (true before the server said: it checks again when a run starts). */
  isStepName(name: string): boolean {
    return this._stepName ? this._stepName.test(name) : true;
  }

  /**
   * The status a step shows for its tasks': the first of `precedence` any has; else (all done) the
   * one they share, or the first done status if they differ.
   */
  combine(statuses: string[]): string {
    const first = this.precedence.find(s => statuses.includes(s));
    if (first) {
      return first;
    }
    const distinct = new Set(statuses);
    return distinct.size === 1 ? statuses[0] : ([...this.done][0] ?? statuses[0] ?? '');
  }
}

export const vocabulary = new Vocabulary();
