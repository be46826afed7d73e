// Contrast (WCAG 2) of every visible text inside `selectors` against what is behind it: the
// nearest backgrounds up the tree (alpha-blended), or for SVG text the shape it sits on.
(selectors) => {
  const ctx = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
  const rgba = css => {  // any CSS colour the browser computed -> [r, g, b, a]
    ctx.clearRect(0, 0, 1, 1);
    ctx.fillStyle = '#000';
    ctx.fillStyle = css;
    ctx.fillRect(0, 0, 1, 1);
    const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
    return [r, g, b, a / 255];
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (e instanceof SVGElement) {
        const shape = e.tagName === 'g' ? e.querySelector(':scope > rect') : null;
        if (shape) layers.push(rgba(getComputedStyle(shape).fill));
        continue;
      }
      const c = rgba(style.backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] === 1) break;
    }
    return layers.reverse().reduce((acc, c) => over(c, acc), [255, 255, 255, 1]);
  };
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const results = [];
  for (const root of document.querySelectorAll(selectors)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent.trim()).join(' ');
      const rect = el.getBoundingClientRect();
      if (!own || rect.width === 0 || rect.height === 0 || el.closest('[disabled], .jp-mod-hidden, .lm-mod-hidden, title, option')) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || style.opacity === '0') continue;
      const bg = background(el);
      const fg = over(rgba(el instanceof SVGElement ? style.fill : style.color), bg);
      const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      results.push({ text: own.slice(0, 40), cls: String(el.className?.baseVal ?? el.className).slice(0, 60),
                     ratio: Math.round(((l1 + 0.05) / (l2 + 0.05)) * 100) / 100,
                     coloured: Math.max(...bg.slice(0, 3)) - Math.min(...bg.slice(0, 3)) > 8 });
    }
  }
  return results;
}
