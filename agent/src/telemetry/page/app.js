// The edge-agent page: each camera's newest frame with its motion boxes, motion masks
// and zones drawn over it, its state, its recent incidents, and a polygon tool that
// prints the TOML of a zone or a motion mask. It only reads from the agent.
'use strict';

const STATE_EVERY_MS = 2000;
const FRAME_EVERY_MS = 2000;
const SVG = 1000; // the overlay's viewBox side: fractions of the frame times this

const views = new Map();

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;',
    '"': '&quot;', "'": '&#39;' }[c]));
}

// A coordinate as `validate` takes it: a fraction of the frame in 0.0..=1.0, 3 decimals.
function fraction(v) {
  return Math.round(Math.min(1, Math.max(0, v)) * 1000) / 1000;
}

// A TOML float (TOML reads `1` as an integer).
function float(v) {
  const s = String(v);
  return /[.e]/.test(s) ? s : s + '.0';
}

function polygon(points) {
  return '[' + points.map(([x, y]) => `[${float(x)}, ${float(y)}]`).join(', ') + ']';
}

// A TOML bare key: letters, digits, `_` and `-`.
function bareKey(name) {
  const k = String(name).trim().replace(/[^A-Za-z0-9_-]/g, '_');
  return k || 'new_zone';
}

// The TOML for the polygon drawn: a zone, or the camera's motion masks with this one
// added (an array replaces the one in lower layers, so the masks already set are kept).
function tomlFor(cam, kind, name, points) {
  if (points.length < 3) {
    return `# click ${3 - points.length} more corner(s) on the frame`;
  }
  const head = `[[cameras]]\nid = "${cam.id}"\n\n`;
  if (kind === 'mask') {
    const all = (cam.masks || []).concat([points]);
    return head + '[cameras.motion]\nmasks = [\n' +
      all.map(p => '  ' + polygon(p) + ',\n').join('') + ']\n';
  }
  return head + `[cameras.zones.${bareKey(name)}]\npoints = ${polygon(points)}\n`;
}

function svgPoints(points) {
  return points.map(([x, y]) => `${x * SVG},${y * SVG}`).join(' ');
}

function drawOverlay(v) {
  const cam = v.cam;
  let svg = '';
  let labels = '';
  for (const m of cam.masks || []) {
    svg += `<polygon class="mask" points="${svgPoints(m)}"/>`;
  }
  for (const [name, z] of Object.entries(cam.zones || {})) {
    svg += `<polygon class="zone" points="${svgPoints(z)}"/>`;
    const [x, y] = z[0];
    labels += `<span style="left:${x * 100}%;top:${y * 100}%">${esc(name)}</span>`;
  }
  for (const [x, y, w, h] of (cam.motion && cam.motion.boxes) || []) {
    svg += `<rect class="motion" x="${x * SVG}" y="${y * SVG}" width="${w * SVG}" height="${h * SVG}"/>`;
  }
  if (v.points.length > 0) {
    const shape = v.points.length >= 3 ? 'polygon' : 'polyline';
    svg += `<${shape} class="draft" points="${svgPoints(v.points)}"/>`;
    for (const [x, y] of v.points) {
      svg += `<rect class="corner" x="${x * SVG - 6}" y="${y * SVG - 6}" width="12" height="12"/>`;
    }
  }
  v.el.querySelector('.overlay').innerHTML = svg;
  v.el.querySelector('.labels').innerHTML = labels;
}

function drawToml(v) {
  const kind = v.el.querySelector('.kind').value;
  const name = v.el.querySelector('.name').value;
  v.el.querySelector('.zone-name').hidden = kind !== 'zone';
  v.el.querySelector('.toml').textContent = tomlFor(v.cam, kind, name, v.points);
}

function drawState(v, now) {
  const cam = v.cam;
  let fps = '';
  if (v.last && now > v.last.at) {
    fps = ((cam.frames - v.last.frames) / ((now - v.last.at) / 1000)).toFixed(1);
  }
  v.last = { frames: cam.frames, at: now };
  const rows = [
    ['state', cam.state],
    ['decoder', cam.decoder || '–'],
    ['fps', fps || '…'],
    ['frames', cam.frames],
    ['restarts', cam.restarts + (cam.last_reason ? ` (last: ${cam.last_reason})` : '')],
    ['size', cam.source_size ? cam.source_size.join(' × ') : '–'],
    ['last motion', cam.motion && cam.motion.at_ms ? new Date(cam.motion.at_ms).toLocaleTimeString() : '–'],
  ];
  v.el.querySelector('.state').innerHTML =
    rows.map(([k, val]) => `<dt>${esc(k)}</dt><dd>${esc(val)}</dd>`).join('');
  const title = v.el.querySelector('.title');
  title.innerHTML = `${esc(cam.id)}<span class="badge ${esc(cam.state)}">${esc(cam.state)}</span>`;
  if (cam.source_size) {
    v.el.querySelector('.view').style.aspectRatio = `${cam.source_size[0]} / ${cam.source_size[1]}`;
  }
  const incidents = cam.incidents || [];
  const html = incidents.length === 0
    ? '<li>none yet</li>'
    : incidents.map(i => {
      const when = new Date(i.started_ms).toLocaleTimeString();
      const snapUrl = i.snapshot ? `/page/snapshot/${encodeURIComponent(i.snapshot)}` : '';
      // The snapshot as a thumbnail, opening the full picture.
      const snap = i.snapshot
        ? `<a href="${snapUrl}" target="_blank"><img class="snapshot" src="${snapUrl}"
            alt="snapshot ${esc(i.snapshot)}" title="snapshot ${esc(i.snapshot)}"></a>`
        : '';
      const clip = i.clip ? ` · <a href="/clips/${encodeURIComponent(i.clip)}">clip</a>` : '';
      return `<li data-incident="${esc(i.incident)}">${snap}<span>${esc(when)} ${esc(i.class)} (${esc(i.state)},
        best ${Number(i.best_score).toFixed(2)}, ${esc(i.frames)} frames)${clip}</span></li>`;
    }).join('');
  // Only when something changed: the thumbnails are not fetched again every refresh.
  if (v.incidentsHtml !== html) {
    v.incidentsHtml = html;
    v.el.querySelector('.incidents').innerHTML = html;
  }
}

function refreshFrame(v) {
  const img = v.el.querySelector('.frame');
  const next = () => setTimeout(() => refreshFrame(v), FRAME_EVERY_MS);
  img.onload = next;
  img.onerror = next;
  img.src = `/page/frame/${encodeURIComponent(v.cam.id)}?t=${Date.now()}`;
}

function addCamera(cam) {
  const el = document.getElementById('camera').content.firstElementChild.cloneNode(true);
  el.dataset.camera = cam.id;
  const v = { cam, el, points: [], last: null };
  views.set(cam.id, v);
  const view = el.querySelector('.view');
  view.addEventListener('click', e => {
    const r = view.getBoundingClientRect();
    v.points.push([fraction((e.clientX - r.left) / r.width), fraction((e.clientY - r.top) / r.height)]);
    drawOverlay(v);
    drawToml(v);
  });
  el.querySelector('.undo').addEventListener('click', () => {
    v.points.pop();
    drawOverlay(v);
    drawToml(v);
  });
  el.querySelector('.clear').addEventListener('click', () => {
    v.points = [];
    drawOverlay(v);
    drawToml(v);
  });
  el.querySelector('.kind').addEventListener('change', () => drawToml(v));
  el.querySelector('.name').addEventListener('input', () => drawToml(v));
  document.getElementById('cameras').appendChild(el);
  refreshFrame(v);
  return v;
}

async function refreshState() {
  const status = document.getElementById('status');
  try {
    const r = await fetch('/page/cameras.json', { cache: 'no-store' });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    const data = await r.json();
    document.getElementById('device').textContent = data.device || '';
    const now = Date.now();
    const seen = new Set();
    for (const cam of data.cameras) {
      seen.add(cam.id);
      const v = views.get(cam.id) || addCamera(cam);
      v.cam = cam;
      drawState(v, now);
      drawOverlay(v);
      drawToml(v);
    }
    for (const [id, v] of views) {
      if (!seen.has(id)) {
        v.el.remove();
        views.delete(id);
      }
    }
    status.textContent = `updated ${new Date(now).toLocaleTimeString()}`;
  } catch (e) {
    status.textContent = `cannot read the cameras: ${e.message}`;
  }
  setTimeout(refreshState, STATE_EVERY_MS);
}

refreshState();
