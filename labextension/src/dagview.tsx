import dagre from '@dagrejs/dagre';
import * as React from 'react';

import { IDag } from './api';
import { IStepState } from './status';

const NODE_HEIGHT = 30;
const CHAR_WIDTH = 7.5;

interface ILayoutNode {
  name: string;
  x: number;
  y: number;
  width: number;
}

interface ILayoutEdge {
  from: string;
  to: string;
  names: string[];
  points: { x: number; y: number }[];
}

function layout(dag: IDag) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 18, ranksep: 28, marginx: 6, marginy: 6 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const step of dag.steps) {
    g.setNode(step.name, {
      width: Math.max(70, step.name.length * CHAR_WIDTH + 34),
      height: NODE_HEIGHT
    });
  }
  for (const step of dag.steps) {
    for (const upstream of Object.keys(step.edges ?? {})) {
      if (g.hasNode(upstream)) {
        g.setEdge(upstream, step.name, { names: step.edges[upstream] });
      }
    }
  }
  dagre.layout(g);
  const nodes: ILayoutNode[] = g.nodes().map(name => {
    const n = g.node(name);
    return { name, x: n.x, y: n.y, width: n.width };
  });
  const edges: ILayoutEdge[] = g.edges().map(e => ({
    from: e.v,
    to: e.w,
    names: (g.edge(e) as any).names ?? [],
    points: g.edge(e).points
  }));
  const graph = g.graph();
  return { nodes, edges, width: graph.width ?? 0, height: graph.height ?? 0 };
}

export interface IDagViewProps {
  dag: IDag;
  states: Map<string, IStepState>;
  selected?: string | null;
  onSelect?: (step: string) => void;
}

/** The notebook's steps as an SVG graph, coloured by each step's status in the shown run. */
export function DagView(props: IDagViewProps): JSX.Element {
  const { nodes, edges, width, height } = React.useMemo(() => layout(props.dag), [props.dag]);
  if (!nodes.length) {
    return <div className="jp-flow-empty">No steps yet: tag a cell with "Mark cell as step".</div>;
  }
  return (
    <svg
      className="jp-flow-dag"
      viewBox={`0 0 ${width} ${height}`}
      width={width}
      height={height}
      role="img"
      aria-label="pipeline graph"
    >
      <defs>
        <marker id="jp-flow-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
          <path d="M0,0 L10,5 L0,10 z" className="jp-flow-arrowhead" />
        </marker>
      </defs>
      {edges.map(e => (
        <polyline
          key={`${e.from}->${e.to}`}
          className="jp-flow-edge"
          points={e.points.map(p => `${p.x},${p.y}`).join(' ')}
          markerEnd="url(#jp-flow-arrow)"
        >
          <title>{e.names.length ? e.names.join(', ') : 'runs after'}</title>
        </polyline>
      ))}
      {nodes.map(n => {
        const state = props.states.get(n.name);
        const status = state?.status ?? 'none';
        const count = state && state.total > 1 ? ` ${state.done}/${state.total}` : '';
        return (
          <g
            key={n.name}
            className={`jp-flow-node jp-flow-status-${status}${props.selected === n.name ? ' jp-mod-selected' : ''}`}
            data-step={n.name}
            data-status={status}
            transform={`translate(${n.x - n.width / 2},${n.y - NODE_HEIGHT / 2})`}
            onClick={() => props.onSelect?.(n.name)}
          >
            <title>{`${n.name}: ${status}`}</title>
            <rect width={n.width} height={NODE_HEIGHT} rx={6} />
            <circle cx={12} cy={NODE_HEIGHT / 2} r={4} className="jp-flow-dot" />
            <text x={22} y={NODE_HEIGHT / 2} dominantBaseline="central">
              {n.name + count}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
