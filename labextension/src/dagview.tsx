import dagre from '@dagrejs/dagre';
import * as React from 'react';

import { IDag, IPlanStep } from './api';
import { IStepState } from './status';

const FONT = 12; // label size in graph units; the view never scales it below MIN_LABEL_PX
const MIN_LABEL_PX = 11;
const MIN_SCALE = MIN_LABEL_PX / FONT;
const MAX_FIT = 1.25;
const NODE_HEIGHT = 32;
const LINE = 14; // between the lines of a wrapped label
const TEXT_X = 21; // the label starts after the status glyph
const BADGE = 16; // the plan's glyph, at the node's right end
const NODE_SPACE = TEXT_X + 6 + BADGE + 4; // a node's width beside its label
const PAD = 8;
const MAX_HEIGHT = 480;

/** Status shown by a glyph (and the border style in the stylesheet), not by colour alone. */
export const GLYPHS: Record<string, string> = {
  succeeded: '✓',
  running: '▶',
  queued: '…',
  failed: '✗',
  timed_out: '⏱',
  crashed: '‼',
  cancelled: '⊘',
  cached: '♻',
  reused: '♻',
  skipped: '–'
};
const LEGEND = ['succeeded', 'running', 'queued', 'failed', 'cached', 'cancelled'];
/** What the next run would do with a step: a glyph of its own shape (a badge), and words for screen readers. */
export const PLAN_GLYPHS: Record<string, string> = { reuse: '✓', run: '▶' };
const PLAN_WORDS: Record<string, string> = { reuse: 'will reuse', run: 'will run' };

let canvas: CanvasRenderingContext2D | null = null;
function textWidth(text: string): number {
  canvas = canvas ?? document.createElement('canvas').getContext('2d');
  if (!canvas) {
    return text.length * FONT * 0.62;
  }
  const family = getComputedStyle(document.body).getPropertyValue('--jp-ui-font-family') || 'sans-serif';
  canvas.font = `${FONT}px ${family}`;
  return canvas.measureText(text).width;
}

/** A name in at most two lines, broken after an underscore where that makes the widest line shortest. */
function wrap(name: string): string[] {
  let best = [name];
  let widest = textWidth(name);
  for (let at = name.indexOf('_'); at >= 0 && at < name.length - 1; at = name.indexOf('_', at + 1)) {
    const lines = [name.slice(0, at + 1), name.slice(at + 1)];
    const width = Math.max(...lines.map(textWidth));
    if (width < widest) {
      [best, widest] = [lines, width];
    }
  }
  return best;
}

/** Edges a longer path implies (a -> c beside a -> b -> c), as "from->to". */
function implied(dag: IDag): Set<string> {
  const upstream = new Map(dag.steps.map(s => [s.name, Object.keys(s.edges ?? {})]));
  const known = new Map<string, Set<string>>();
  const ancestors = (name: string): Set<string> => {
    let found = known.get(name);
    if (!found) {
      known.set(name, (found = new Set())); // set first: a cycle cannot recurse for ever
      for (const up of upstream.get(name) ?? []) {
        found.add(up);
        ancestors(up).forEach(a => found!.add(a));
      }
    }
    return found;
  };
  const out = new Set<string>();
  for (const [name, direct] of upstream) {
    for (const up of direct) {
      if (direct.some(other => other !== up && ancestors(other).has(up))) {
        out.add(`${up}->${name}`);
      }
    }
  }
  return out;
}

interface INode {
  name: string;
  lines: string[];
  undrawn: string[]; // "names from step" of the implied edges, not drawn
  x: number;
  y: number;
  width: number;
  height: number;
}

interface ILayout {
  nodes: INode[];
  edges: { from: string; to: string; names: string[]; points: { x: number; y: number }[] }[];
  box: { x: number; y: number; width: number; height: number };
}

/**
 * The graph laid out by dagre, with only the edges no longer path implies (the order stays
 * visible, without a tangle of long edges; the node's title names what the others carry).
 * `narrow`: long names in two lines and nodes closer together.
 */
function layout(dag: IDag, narrow = false): ILayout {
  const skip = implied(dag);
  const undrawn = new Map<string, string[]>();
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: narrow ? 8 : 14, edgesep: narrow ? 4 : 6, ranksep: 26 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const step of dag.steps) {
    const lines = narrow ? wrap(step.name) : [step.name];
    const reserve = step.foreach ? ' 000/000' : ''; // room for "n/N" of a foreach step
    const text = Math.max(...lines.map((line, i) => textWidth(line + (i === lines.length - 1 ? reserve : ''))));
    const height = NODE_HEIGHT + (lines.length - 1) * LINE;
    g.setNode(step.name, { width: NODE_SPACE + text, height, lines });
  }
  for (const step of dag.steps) {
    for (const upstream of Object.keys(step.edges ?? {})) {
      const names = step.edges[upstream];
      if (skip.has(`${upstream}->${step.name}`)) {
        undrawn.set(step.name, [...(undrawn.get(step.name) ?? []), `${names.join(', ') || 'order'} from ${upstream}`]);
      } else if (g.hasNode(upstream)) {
        g.setEdge(upstream, step.name, { names });
      }
    }
  }
  dagre.layout(g);
  const nodes = g.nodes().map(name => {
    const n = g.node(name) as dagre.Node<{ lines: string[] }>;
    return { name, lines: n.lines, undrawn: undrawn.get(name) ?? [], x: n.x, y: n.y, width: n.width, height: n.height };
  });
  const edges = g.edges().map(e => ({
    from: e.v,
    to: e.w,
    names: (g.edge(e) as any).names ?? [],
    points: g.edge(e).points
  }));
  // the drawing's bounds hold every node and every edge point (dagre's own size can cut edges off)
  const xs = [
    ...nodes.flatMap(n => [n.x - n.width / 2, n.x + n.width / 2]),
    ...edges.flatMap(e => e.points.map(p => p.x))
  ];
  const ys = [
    ...nodes.flatMap(n => [n.y - n.height / 2, n.y + n.height / 2]),
    ...edges.flatMap(e => e.points.map(p => p.y))
  ];
  const x = Math.min(...xs) - PAD;
  const y = Math.min(...ys) - PAD;
  return { nodes, edges, box: { x, y, width: Math.max(...xs) + PAD - x, height: Math.max(...ys) + PAD - y } };
}

/** A smooth path through dagre's edge points: straight ends, rounded bends. */
function curve(points: { x: number; y: number }[]): string {
  const [first, ...rest] = points;
  let d = `M${first.x},${first.y}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const mid = { x: (rest[i].x + rest[i + 1].x) / 2, y: (rest[i].y + rest[i + 1].y) / 2 };
    d += ` Q${rest[i].x},${rest[i].y} ${mid.x},${mid.y}`;
  }
  const last = rest[rest.length - 1] ?? first;
  return `${d} L${last.x},${last.y}`;
}

interface IView {
  k: number;
  x: number;
  y: number;
  fit: boolean; // follow the panel's width until the user zooms or pans
}

/** The largest scale (up to MAX_FIT, not under MIN_SCALE) that shows the whole drawing, centred. */
function fitted(box: ILayout['box'], width: number): IView {
  const k = Math.max(MIN_SCALE, Math.min(MAX_FIT, width / box.width, MAX_HEIGHT / box.height));
  return { k, x: Math.max(0, (width - box.width * k) / 2) - box.x * k, y: -box.y * k, fit: true };
}

/** The layout that fits `width` at a readable size: names in one line if they fit, else in two. */
function useLayout(dag: IDag, width: number): ILayout {
  const wide = React.useMemo(() => layout(dag), [dag]);
  const narrow = !!width && wide.box.width * MIN_SCALE > width;
  const compact = React.useMemo(() => (narrow ? layout(dag, true) : null), [dag, narrow]);
  return compact ?? wide;
}

/** Track an element's width (a callback ref: the element may come later, after "No steps yet"). */
function useWidth(): [(element: HTMLDivElement | null) => void, number] {
  const [element, setElement] = React.useState<HTMLDivElement | null>(null);
  const [width, setWidth] = React.useState(0);
  React.useEffect(() => {
    if (!element) {
      return;
    }
    const observer = new ResizeObserver(entries => setWidth(entries[0].contentRect.width));
    observer.observe(element);
    return () => observer.disconnect();
  }, [element]);
  return [setElement, width];
}

export interface IDagViewProps {
  dag: IDag;
  states: Map<string, IStepState>;
  /** What the next run would do with each step (none while a run runs). */
  plan?: Map<string, IPlanStep> | null;
  selected?: string | null;
  onSelect?: (step: string) => void;
}

/**
 * The notebook's steps as an SVG graph: fitted to the panel (labels never under 11 px; long names
 * go to two lines when one does not fit), again on every resize until the user zooms or pans; zoom
 * (buttons, + and -, Ctrl+wheel), pan (drag), "fit"; each step's status as glyph and colour, and
 * what the next run would do with it (a badge: reuse or run, why on hover); every node reachable
 * with Tab and chosen with Enter.
 */
export function DagView(props: IDagViewProps): JSX.Element {
  const [ref, width] = useWidth();
  const graph = useLayout(props.dag, width);
  const [view, setView] = React.useState<IView>({ k: 1, x: 0, y: 0, fit: true });
  const drag = React.useRef<{ x: number; y: number } | null>(null);
  React.useEffect(() => {
    if (view.fit && width) {
      setView(fitted(graph.box, width));
    }
  }, [graph, width, view.fit]);

  if (!graph.nodes.length) {
    return <div className="jp-flow-empty">No steps yet: tag a cell with "Mark cell as step".</div>;
  }
  const zoom = (factor: number, cx = width / 2, cy = 0) =>
    setView(v => {
      const k = Math.max(MIN_SCALE, Math.min(4, v.k * factor));
      return { k, x: cx - ((cx - v.x) * k) / v.k, y: cy - ((cy - v.y) * k) / v.k, fit: false };
    });
  const height = Math.min(MAX_HEIGHT, Math.max(80, graph.box.height * view.k));
  const keys = (e: React.KeyboardEvent) => {
    const action = {
      '+': () => zoom(1.25),
      '=': () => zoom(1.25),
      '-': () => zoom(0.8),
      '0': () => setView({ ...view, fit: true })
    }[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  };
  return (
    <div className="jp-flow-dagview" ref={ref} onKeyDown={keys}>
      <div className="jp-flow-dagtools" role="toolbar" aria-label="graph view">
        <button className="jp-flow-zoomin" title="Zoom in (+)" aria-label="zoom in" onClick={() => zoom(1.25)}>
          +
        </button>
        <button className="jp-flow-zoomout" title="Zoom out (-)" aria-label="zoom out" onClick={() => zoom(0.8)}>
          −
        </button>
        <button
          className="jp-flow-fit"
          title="Fit to panel (0)"
          aria-label="fit"
          onClick={() => setView({ ...view, fit: true })}
        >
          fit
        </button>
      </div>
      <svg
        className="jp-flow-dag"
        width="100%"
        height={height}
        role="group"
        aria-label="pipeline graph"
        data-scale={view.k.toFixed(3)}
        onWheel={e => {
          if (e.ctrlKey) {
            e.preventDefault();
            const r = e.currentTarget.getBoundingClientRect();
            zoom(e.deltaY < 0 ? 1.1 : 0.9, e.clientX - r.left, e.clientY - r.top);
          }
        }}
        onPointerDown={e => {
          if (!(e.target as Element).closest('.jp-flow-node')) {
            drag.current = { x: e.clientX, y: e.clientY };
            e.currentTarget.setPointerCapture(e.pointerId);
          }
        }}
        onPointerMove={e => {
          const start = drag.current;
          if (start) {
            drag.current = { x: e.clientX, y: e.clientY };
            setView(v => ({ ...v, x: v.x + e.clientX - start.x, y: v.y + e.clientY - start.y, fit: false }));
          }
        }}
        onPointerUp={() => (drag.current = null)}
      >
        <defs>
          <marker
            id="jp-flow-arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto"
          >
            <path d="M0,0 L10,5 L0,10 z" className="jp-flow-arrowhead" />
          </marker>
        </defs>
        <g transform={`translate(${view.x},${view.y}) scale(${view.k})`}>
          {graph.edges.map(e => (
            <path
              key={`${e.from}->${e.to}`}
              className="jp-flow-edge"
              data-edge={`${e.from}->${e.to}`}
              d={curve(e.points)}
              markerEnd="url(#jp-flow-arrow)"
            >
              <title>{e.names.length ? e.names.join(', ') : 'runs after'}</title>
            </path>
          ))}
          {graph.nodes.map(n => {
            const state = props.states.get(n.name);
            const status = state?.status ?? 'none';
            const count = state && state.total > 1 ? ` ${state.done}/${state.total}` : '';
            const choose = () => props.onSelect?.(n.name);
            const plan = props.plan?.get(n.name);
            const said = `${n.name}${count}: ${status === 'none' ? 'not run' : status}`;
            const will = plan ? `${PLAN_WORDS[plan.action] ?? plan.action}: ${plan.reason}` : null;
            const title = [said, ...n.undrawn.map(u => `also ${u}`), ...(will ? [`next run ${will}`] : [])];
            const lines = [...n.lines.slice(0, -1), n.lines[n.lines.length - 1] + count];
            const middle = n.height / 2;
            return (
              <g
                key={n.name}
                className={`jp-flow-node jp-flow-status-${status}${props.selected === n.name ? ' jp-mod-selected' : ''}`}
                data-step={n.name}
                data-status={status}
                data-plan={plan?.action}
                transform={`translate(${n.x - n.width / 2},${n.y - middle})`}
                tabIndex={0}
                role="button"
                aria-label={`step ${said}${will ? `; next run ${will}` : ''}`}
                aria-pressed={props.selected === n.name}
                onClick={choose}
                onKeyDown={e => {
                  if (e.key === 'Enter' || e.key === ' ') {
                    e.preventDefault();
                    choose();
                  }
                }}
              >
                <title>{title.join('\n')}</title>
                <rect width={n.width} height={n.height} rx={6} />
                <text className="jp-flow-glyph" x={11} y={middle} dominantBaseline="central" textAnchor="middle">
                  {GLYPHS[status] ?? '○'}
                </text>
                <text className="jp-flow-label" x={TEXT_X} y={middle - ((lines.length - 1) * LINE) / 2} fontSize={FONT}>
                  {lines.map((line, i) => (
                    <tspan key={i} x={TEXT_X} dy={i ? LINE : 0} dominantBaseline="central">
                      {line}
                    </tspan>
                  ))}
                </text>
                {plan && will && (
                  <g
                    className={`jp-flow-plan jp-flow-plan-${plan.action}`}
                    data-action={plan.action}
                    transform={`translate(${n.width - BADGE - 4},${middle - BADGE / 2})`}
                    role="img"
                    aria-label={will}
                  >
                    <title>{will}</title>
                    <rect width={BADGE} height={BADGE} rx={BADGE / 2} />
                    <text x={BADGE / 2} y={BADGE / 2} dominantBaseline="central" textAnchor="middle">
                      {PLAN_GLYPHS[plan.action] ?? '?'}
                    </text>
                  </g>
                )}
              </g>
            );
          })}
        </g>
      </svg>
      <ul className="jp-flow-legend" aria-label="legend">
        {LEGEND.map(s => (
          <li key={s} className={`jp-flow-chip jp-flow-status-${s}`}>
            {GLYPHS[s]} {s === 'cached' ? 'cached/reused' : s}
          </li>
        ))}
        {props.plan &&
          Object.keys(PLAN_GLYPHS).map(action => (
            <li key={action} className={`jp-flow-chip jp-flow-plan-${action}`} title="what the next run would do">
              {PLAN_GLYPHS[action]} {PLAN_WORDS[action]}
            </li>
          ))}
      </ul>
    </div>
  );
}
