import { Button, HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IParameter, IRunOptions } from './api';
import { formatValue } from './status';

type Values = Record<string, string | boolean>;

function initialValues(parameters: Record<string, IParameter>): Values {
  const values: Values = {};
  for (const [name, p] of Object.entries(parameters)) {
    // numbers and literals as the notebook writes them ("1.0", "[0.1, 1.0]"), not as JSON.stringify does
    values[name] =
      p.type === 'bool'
        ? Boolean(p.value)
        : p.type === 'str'
          ? String(p.value ?? '')
          : (p.source ?? formatValue(p.value, p.type));
  }
  return values;
}

/** Turn what the form holds back into a value of the parameter's declared type. */
export function parseValue(name: string, type: string, raw: string | boolean): unknown {
  if (type === 'bool' || type === 'str') {
    return raw;
  }
  const text = String(raw).trim();
  if (type === 'int') {
    if (!/^[-+]?\d+$/.test(text)) {
      throw new Error(`${name} must be an integer`);
    }
    return parseInt(text, 10);
  }
  if (type === 'float') {
    const value = Number(text);
    if (text === '' || Number.isNaN(value)) {
      throw new Error(`${name} must be a number`);
    }
    return value;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${name} must be a JSON value (${type})`);
  }
}

/** The parameters whose form value differs from the notebook's default, parsed to their types. */
function changedParameters(
  parameters: Record<string, IParameter>,
  initial: Values,
  values: Values
): Record<string, unknown> {
  const changed: Record<string, unknown> = {};
  for (const [name, p] of Object.entries(parameters)) {
    if (values[name] !== initial[name]) {
      changed[name] = parseValue(name, p.type, values[name]);
    }
  }
  return changed;
}

export interface IRunFormProps {
  parameters: Record<string, IParameter>;
  executors: string[];
  defaultExecutor: string;
  defaultScheduler?: string | null;
  busy: boolean;
  onRun: (options: IRunOptions) => void;
  /** The parameters a run would get now, each time the user changes one that parses. */
  onParameters?: (parameters: Record<string, unknown>) => void;
}

/** Parameters prefilled from the notebook's parameters cell, an executor choice and Run. */
export function RunForm(props: IRunFormProps): JSX.Element {
  const initial = React.useMemo(() => initialValues(props.parameters), [props.parameters]);
  const [values, setValues] = React.useState<Values>(initial);
  const [executor, setExecutor] = React.useState(props.defaultExecutor);
  const [scheduler, setScheduler] = React.useState('');
  const [error, setError] = React.useState('');
  React.useEffect(() => setValues(initial), [initial]);
  React.useEffect(() => {
    try {
      props.onParameters?.(changedParameters(props.parameters, initial, values));
    } catch {
      // a value that does not parse yet: Run says what is wrong with it
    }
  }, [values]);

  const submit = (event: React.FormEvent) => {
    event.preventDefault();
    try {
      // only what the user changed: untouched parameters keep the notebook's own default
      const parameters = changedParameters(props.parameters, initial, values);
      setError('');
      props.onRun({ parameters, executor, scheduler: scheduler || undefined });
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <form className="jp-flow-runform" onSubmit={submit}>
      {Object.entries(props.parameters).map(([name, p]) => (
        <label key={name} className="jp-flow-param">
          <span className="jp-flow-paramname" title={`${name} (${p.type})`}>
            {name}
          </span>
          {p.type === 'bool' ? (
            <input
              type="checkbox"
              checked={Boolean(values[name])}
              onChange={e => setValues({ ...values, [name]: e.target.checked })}
            />
          ) : (
            <input
              className="jp-mod-styled"
              name={name}
              type={p.type === 'int' || p.type === 'float' ? 'number' : 'text'}
              step={p.type === 'float' ? 'any' : undefined}
              value={String(values[name] ?? '')}
              title={String(values[name] ?? '')}
              onChange={e => setValues({ ...values, [name]: e.target.value })}
            />
          )}
        </label>
      ))}
      <label className="jp-flow-param">
        <span className="jp-flow-paramname">executor</span>
        <HTMLSelect
          className="jp-flow-executor"
          value={executor}
          onChange={e => setExecutor(e.target.value)}
          options={props.executors}
          aria-label="executor"
        />
      </label>
      {executor === 'dask' && (
        <label className="jp-flow-param">
          <span className="jp-flow-paramname">scheduler</span>
          <input
            className="jp-mod-styled"
            placeholder={props.defaultScheduler ?? 'tcp://host:8786'}
            value={scheduler}
            title={scheduler || props.defaultScheduler || undefined}
            onChange={e => setScheduler(e.target.value)}
          />
        </label>
      )}
      {error && <div className="jp-flow-error">{error}</div>}
      <Button type="submit" className="jp-flow-run-button jp-flow-primary" disabled={props.busy}>
        ▶ Run
      </Button>
    </form>
  );
}
