import dagre from '@dagrejs/dagre';
import * as React from 'react';

import { IDag } from './api';
import { IStepState } from './status';

const FONT = 12; // label size in graph units; the view never scales it below MIN_LABEL_PX
const MIN_LABEL_PX = 11;
const MIN_SCALE = MIN_LABEL_PX / FONT;
const MAX_FIT = 1.25;
const NODE_HEIGHT = 32;
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

interface ILayout {
  nodes: { name: string; x: number; y: number; width: number }[];
  edges: { from: string; to: string; names: string[]; points: { x: number; y: number }[] }[];
  box: { x: number; y: number; width: number; height: number };
}

function layout(dag: IDag): ILayout {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 14, edgesep: 6, ranksep: 26 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const step of dag.steps) {
    const reserve = step.foreach ? ' 000/000' : ''; // room for "n/N" of a foreach step
    g.setNode(step.name, { width: 36 + textWidth(step.name + reserve), height: NODE_HEIGHT });
  }
  for (const step of dag.steps) {
    for (const upstream of Object.keys(step.edges ?? {})) {
      if (g.hasNode(upstream)) {
        g.setEdge(upstream, step.name, { names: step.edges[upstream] });
      }
    }
  }
  dagre.layout(g);
  const nodes = g.nodes().map(name => {
    const n = g.node(name);
    return { name, x: n.x, y: n.y, width: n.width };
  });
  const edges = g.edges().map(e => ({
    from: e.v,
    to: e.w,
    names: (g.edge(e) as any).names ?? [],
    points: g.edge(e).points
  }));
  // the drawing's bounds hold every node and every edge point (dagre's own size can cut edges off)
  const xs = [...nodes.flatMap(n => [n.x - n.width / 2, n.x + n.width / 2]), ...edges.flatMap(e => e.points.map(p => p.x))];
  const ys = [...nodes.flatMap(n => [n.y - NODE_HEIGHT / 2, n.y + NODE_HEIGHT / 2]), ...edges.flatMap(e => e.points.map(p => p.y))];
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

function fitted(box: ILayout['box'], width: number): IView {
  const k = Math.max(MIN_SCALE, Math.min(MAX_FIT, width / box.width));
  return { k, x: Math.max(0, (width - box.width * k) / 2) - box.x * k, y: -box.y * k, fit: true };
}

/** Track an element's width. */
function useWidth(): [React.RefObject<HTMLDivElement>, number] {
  const ref = React.useRef<HTMLDivElement>(null);
  const [width, setWidth] = React.useState(0);
  React.useEffect(() => {
    if (!ref.current) {
      return;
    }
    const observer = new ResizeObserver(entries => setWidth(entries[0].contentRect.width));
    observer.observe(ref.current);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

export interface IDagViewProps {
  dag: IDag;
  states: Map<string, IStepState>;
  selected?: string | null;
  onSelect?: (step: string) => void;
}

/**
 * The notebook's steps as an SVG graph: fitted to the panel's width (labels never under 11 px),
 * zoom (buttons, + and -, Ctrl+wheel), pan (drag), "fit"; each step's status as glyph and colour;
 * every node reachable with Tab and chosen with Enter.
 */
export function DagView(props: IDagViewProps): JSX.Element {
  const graph = React.useMemo(() => layout(props.dag), [props.dag]);
  const [ref, width] = useWidth();
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
    const action = { '+': () => zoom(1.25), '=': () => zoom(1.25), '-': () => zoom(0.8), '0': () => setView({ ...view, fit: true }) }[e.key];
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
        <button className="jp-flow-fit" title="Fit to panel (0)" aria-label="fit" onClick={() => setView({ ...view, fit: true })}>
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
          <marker id="jp-flow-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
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
            return (
              <g
                key={n.name}
                className={`jp-flow-node jp-flow-status-${status}${props.selected === n.name ? ' jp-mod-selected' : ''}`}
                data-step={n.name}
                data-status={status}
                transform={`translate(${n.x - n.width / 2},${n.y - NODE_HEIGHT / 2})`}
                tabIndex={0}
                role="button"
                aria-label={`step ${n.name}${count}: ${status === 'none' ? 'not run' : status}`}
                aria-pressed={props.selected === n.name}
                onClick={choose}
                onKeyDown={e => {
                  if (e.key === 'Enter' || e.key === ' ') {
                    e.preventDefault();
                    choose();
                  }
                }}
              >
                <title>{`${n.name}: ${status === 'none' ? 'not run' : status}`}</title>
                <rect width={n.width} height={NODE_HEIGHT} rx={6} />
                <text className="jp-flow-glyph" x={13} y={NODE_HEIGHT / 2} dominantBaseline="central" textAnchor="middle">
                  {GLYPHS[status] ?? '○'}
                </text>
                <text className="jp-flow-label" x={25} y={NODE_HEIGHT / 2} dominantBaseline="central" fontSize={FONT}>
                  {n.name + count}
                </text>
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
      </ul>
    </div>
  );
}
