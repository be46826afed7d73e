import * as React from 'react';

import { ITask } from './api';
import { vocabulary } from './vocabulary';

/** One step's state in a run: foreach steps have several tasks, summed up here. */
export interface IStepState {
  status: string;
  done: number;
  total: number;
  tasks: ITask[];
}

/** Each step's state: its tasks, how many are done, and the status it shows (vocabulary.combine). */
export function stepStates(tasks: ITask[] | undefined): Map<string, IStepState> {
  const states = new Map<string, IStepState>();
  for (const task of tasks ?? []) {
    const state = states.get(task.step) ?? { status: '', done: 0, total: 0, tasks: [] };
    state.tasks.push(task);
    state.total += 1;
    if (vocabulary.done.has(task.status)) {
      state.done += 1;
    }
    states.set(task.step, state);
  }
  states.forEach(state => (state.status = vocabulary.combine(state.tasks.map(t => t.status))));
  return states;
}

/** Non-breaking spaces (U+00A0) for the spaces in `text` not after a comma: a narrow sidebar then wraps a time or
 * a duration between its parts ("Dec 7," | "04:25:20 PM"), never "04:25:20" | "PM" or "2.4" | "s". */
function keepWhole(text: string): string {
  return text.replace(/(?<!,)[ \u202f]/g, '\u00a0');
}

export function formatDuration(seconds?: number | null): string {
  if (seconds === null || seconds === undefined) {
    return '';
  }
  if (seconds < 60) {
    return keepWhole(`${seconds.toFixed(1)} s`);
  }
  const m = Math.floor(seconds / 60);
  return keepWhole(`${m} min ${Math.round(seconds - 60 * m)} s`);
}

export function formatTime(iso?: string | null): string {
  return iso
    ? keepWhole(
        new Date(iso).toLocaleString(undefined, {
          month: 'short',
          day: 'numeric',
          hour: '2-digit',
          minute: '2-digit',
          second: '2-digit'
        })
      )
    : '';
}

export function formatNumber(value: unknown): string {
  return typeof value === 'number' && !Number.isInteger(value) ? value.toPrecision(4) : String(value);
}

/** Seconds since `since` (an ISO time), ticking every second; null when `since` is null. */
export function useElapsed(since?: string | null): number | null {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!since) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [since]);
  return since ? Math.max(0, (now - new Date(since).getTime()) / 1000) : null;
}

/** A parameter value as Python would write it: True, None, a float keeps its ".0". */
export function formatValue(value: unknown, type?: string): string {
  if (type === 'float' && typeof value === 'number' && Number.isInteger(value)) {
    return value.toFixed(1);
  }
  if (typeof value === 'boolean' || value === null) {
    return value === null ? 'None' : value ? 'True' : 'False';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}
