(function () {
  'use strict';
  // Everything shown comes from /api/status and is put in the page with textContent or as SVG
  // attributes of numbers: no HTML is ever built from data, so tag names, values and errors
  // cannot inject markup. The page only reads (GET); it has no forms and no write actions.
  var TONES = { good: 1, warn: 1, bad: 1, muted: 1 };
  var SVG = 'http://www.w3.org/2000/svg';
  var W = 400, H = 130, L = 46, R = 6, T = 10, B = 18;
  var LIMIT = 500;
  var filter = document.getElementById('filter');
  var updated = document.getElementById('updated');
  var busy = false, debounce = null;

  function toneClass(t) { return TONES[t] ? 't-' + t : ''; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function num(v) {
    if (typeof v !== 'number' || !isFinite(v)) return '\u2013';
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100 || a === 0 || Number.isInteger(v)) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }
  function age(ms) {
    if (typeof ms !== 'number' || ms < 0) return '\u2013';
    var s = ms / 1000;
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 120) return Math.round(s) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }
  function span(ms) {
    var s = Math.round(ms / 1000);
    return s < 120 ? s + ' s' : Math.round(s / 60) + ' min';
  }
  function cell(tr, c, cls) {
    var text = c, tone = '';
    if (c !== null && typeof c === 'object') { text = c.text; tone = c.tone; }
    var td = el('td', cls, text);
    var tc = toneClass(tone);
    if (tc) td.classList.add(tc);
    if (typeof text === 'number') td.classList.add('num');
    tr.appendChild(td);
  }

  function renderFacts(facts) {
    var out = [];
    (facts || []).forEach(function (f) {
      var d = el('div', 'fact');
      var tc = toneClass(f.tone);
      if (tc) d.classList.add(tc);
      d.appendChild(el('div', 'label', f.label));
      d.appendChild(el('div', 'value', f.value));
      if (f.hint) d.title = String(f.hint);
      out.push(d);
    });
    document.getElementById('facts').replaceChildren.apply(document.getElementById('facts'), out);
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function chart(spec, hist) {
    var fig = el('figure', 'card');
    var cap = el('figcaption');
    cap.appendChild(el('span', '', spec.title));
    var now = el('span', 'now');
    cap.appendChild(now);
    fig.appendChild(cap);
    var t = (hist && hist.t) || [];
    var data = (hist && hist.series) || {};
    var series = spec.series || [];
    var max = 0;
    series.forEach(function (s) {
      (data[s.key] || []).forEach(function (v) { if (typeof v === 'number' && v > max) max = v; });
    });
    max = niceMax(max);
    var svg = sv('svg', { viewBox: '0 0 ' + W + ' ' + H, 'class': 'plot', role: 'img' });
    var pw = W - L - R, ph = H - T - B;
    [0, 0.5, 1].forEach(function (f) {
      var y = T + ph - f * ph;
      svg.appendChild(sv('line', { x1: L, x2: W - R, y1: y, y2: y, 'class': 'grid' }));
      var label = sv('text', { x: L - 5, y: y + 4, 'text-anchor': 'end' });
      label.textContent = num(max * f);
      svg.appendChild(label);
    });
    var n = t.length;
    var t0 = n ? t[0] : 0, t1 = n ? t[n - 1] : 1;
    var dt = Math.max(t1 - t0, 1);
    var xl = sv('text', { x: L, y: H - 3 });
    xl.textContent = n > 1 ? '\u2212' + span(t1 - t0) : 'collecting\u2026';
    svg.appendChild(xl);
    var xr = sv('text', { x: W - R, y: H - 3, 'text-anchor': 'end' });
    xr.textContent = 'now';
    svg.appendChild(xr);
    var nowText = [];
    series.forEach(function (s, si) {
      var vals = data[s.key] || [];
      var pts = [];
      for (var i = 0; i < vals.length && i < n; i++) {
        var v = typeof vals[i] === 'number' ? vals[i] : 0;
        var x = L + ((t[i] - t0) / dt) * pw;
        var y = T + ph - Math.min(v / max, 1) * ph;
        pts.push(x.toFixed(1) + ',' + y.toFixed(1));
      }
      var color = /^#[0-9a-fA-F]{3,8}$/.test(s.color || '') ? s.color : '#2f6fde';
      if (pts.length > 1) {
        if (si === 0) {
          var area = pts.slice();
          area.push((L + pw).toFixed(1) + ',' + (T + ph));
          area.push(pts[0].split(',')[0] + ',' + (T + ph));
          svg.appendChild(sv('polygon', { points: area.join(' '), fill: color, 'fill-opacity': 0.12, stroke: 'none' }));
        }
        svg.appendChild(sv('polyline', { points: pts.join(' '), fill: 'none', stroke: color, 'stroke-width': 1.6, 'stroke-linejoin': 'round' }));
      }
      if (vals.length) nowText.push(num(vals[vals.length - 1]));
    });
    now.textContent = nowText.length ? nowText.join(' / ') + (spec.unit ? ' ' + spec.unit : '') : '';
    fig.appendChild(svg);
    var legend = el('div', 'legend');
    series.forEach(function (s) {
      var item = el('span');
      var sw = el('i');
      sw.style.background = /^#[0-9a-fA-F]{3,8}$/.test(s.color || '') ? s.color : '#2f6fde';
      item.appendChild(sw);
      item.appendChild(document.createTextNode(String(s.label)));
      legend.appendChild(item);
    });
    fig.appendChild(legend);
    return fig;
  }

  function renderCharts(charts, hist) {
    var box = document.getElementById('charts');
    box.replaceChildren.apply(box, (charts || []).map(function (c) { return chart(c, hist); }));
  }

  function table(spec) {
    var card = el('div', spec.wide ? 'card wide' : 'card');
    var h = el('h2', '', spec.title);
    card.appendChild(h);
    var rows = spec.rows || [];
    if (!rows.length) {
      card.appendChild(el('div', 'muted', spec.empty || 'none'));
      return card;
    }
    var tbl = el('table');
    var thead = el('thead'), hr = el('tr');
    (spec.columns || []).forEach(function (c) { hr.appendChild(el('th', '', c)); });
    thead.appendChild(hr);
    tbl.appendChild(thead);
    var tb = el('tbody');
    rows.forEach(function (r) {
      var tr = el('tr');
      (r || []).forEach(function (c) { cell(tr, c); });
      tb.appendChild(tr);
    });
    tbl.appendChild(tb);
    card.appendChild(tbl);
    return card;
  }

  function renderTables(tables) {
    var box = document.getElementById('tables');
    box.replaceChildren.apply(box, (tables || []).map(table));
  }

  function renderTags(tags) {
    tags = tags || {};
    var count = document.getElementById('tag-count');
    var shown = (tags.rows || []).length;
    count.textContent = (tags.matched === tags.total ? tags.total + ' tags' : tags.matched + ' of ' + tags.total + ' tags match') +
      (shown < tags.matched ? ', first ' + shown + ' shown' : '');
    var tb = document.getElementById('tag-rows');
    var out = [];
    (tags.rows || []).forEach(function (r) {
      var tr = el('tr');
      cell(tr, r.name, 'mono');
      if (r.description) tr.firstChild.title = String(r.description);
      cell(tr, r.value === null || r.value === undefined ? '(no value)' : r.value, 'num mono');
      cell(tr, r.unit);
      cell(tr, { text: r.quality, tone: r.tone });
      cell(tr, age(r.age_ms), 'num');
      cell(tr, r.source, 'mono');
      out.push(tr);
    });
    tb.replaceChildren.apply(tb, out);
  }

  function render(d) {
    var v = d.view || {};
    var badge = document.getElementById('health');
    var ok = d.health && d.health.status === 'ok';
    badge.textContent = ok ? 'healthy' : 'unhealthy: ' + ((d.health && d.health.reasons) || []).join('; ');
    badge.className = 'badge ' + (ok ? 't-good' : 't-bad');
    renderFacts(v.facts);
    renderCharts(v.charts, d.history);
    renderTables(v.tables);
    renderTags(d.tags);
    updated.textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  function refresh() {
    if (busy) return;
    busy = true;
    var q = '?tags=' + encodeURIComponent(filter.value) + '&limit=' + LIMIT;
    fetch('/api/status' + q, { cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
      .then(render)
      .catch(function (e) {
        updated.textContent = 'no answer from the daemon (' + e.message + ')';
        var badge = document.getElementById('health');
        badge.textContent = 'unreachable';
        badge.className = 'badge t-bad';
      })
      .then(function () { busy = false; });
  }

  filter.addEventListener('input', function () {
    clearTimeout(debounce);
    debounce = setTimeout(refresh, 200);
    var q = filter.value ? '?tags=' + encodeURIComponent(filter.value) : location.pathname;
    if (window.history && window.history.replaceState) window.history.replaceState(null, '', q);
  });
  refresh();
  setInterval(refresh, 1000);
})();
