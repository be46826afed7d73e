import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="8" y="2" width="8" height="5" rx="1.5"/>
    <rect x="2" y="17" width="8" height="5" rx="1.5"/>
    <rect x="14" y="17" width="8" height="5" rx="1.5"/>
    <path d="M11 7h2v4h6v6h-2v-4H7v4H5v-6h6z"/>
  </g>
</svg>`;

export const flowIcon = new LabIcon({ name: 'jupyter-flow:flow', svgstr: svg });
