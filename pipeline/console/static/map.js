// parkwarden console: the map (Leaflet, vendored in static/leaflet). No build step.
// Fetches the GeoJSON from data-src every data-refresh ms and updates the layers in place; counts
// time left from the server's "now" (PostgreSQL's clock). Text from the data goes in as text, never
// as HTML. A tile layer only when the city configured one (data-tiles).
(function () {
  "use strict";
  const el = document.getElementById("map");
  if (!el || !window.L) return;
  const words = JSON.parse(el.dataset.words);
  const clock = new Intl.DateTimeFormat(el.dataset.lang, {timeZone: el.dataset.tz, hour: "2-digit", minute: "2-digit",
                                                          second: "2-digit", hour12: false});
  let clockOffset = 0;  // server time - browser time, in ms

  function say(key, params) {
    let text = words[key] || key;
    Object.keys(params || {}).forEach(function (k) { text = text.split("{" + k + "}").join(String(params[k])); });
    return text;
  }

  function age(seconds) {
    if (seconds < 60) return say("s", {n: seconds});
    if (seconds < 3600) return say("min", {n: Math.floor(seconds / 60)});
    return say("h", {h: Math.floor(seconds / 3600), m: String(Math.floor(seconds % 3600 / 60)).padStart(2, "0")});
  }

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function link(href, text, className) {
    const a = node("a", className, text);
    a.href = href;
    return a;
  }

  const map = L.map(el, {zoomSnap: 0.25});
  if (el.dataset.tiles) {
    L.tileLayer(el.dataset.tiles, {attribution: el.dataset.attribution, maxZoom: 19}).addTo(map);
  }
  L.control.scale({imperial: false}).addTo(map);
  const groups = {zone: L.featureGroup(), car_park: L.featureGroup(), camera: L.featureGroup(), case: L.featureGroup()};
  const names = {zone: "zones", car_park: "car_parks", camera: "cameras", case: "cases"};
  Object.keys(groups).forEach(function (layer) { groups[layer].addTo(map); });
  const control = L.control.layers(null, {}, {collapsed: window.innerWidth < 600}).addTo(map);
  const drawn = {zone: {}, car_park: {}, camera: {}, case: {}};  // feature id -> {layer, key}
  let fitted = false;

  // ── what each feature looks like ──────────────────────────────────────────────────────

  function zoneLayer(f) {
    const p = f.properties;
    const road = p.kind === "road";
    const layer = L.geoJSON(f, {style: {
      className: "pw-zone pw-zone-" + p.kind + (p.exempt ? " pw-zone-exempt" : ""),
      color: road ? "#d81b60" : "#3949ab", weight: road ? 6 : 2, opacity: 0.85,
      fillColor: "#3949ab", fillOpacity: road ? 0 : 0.06, dashArray: p.exempt ? "6 4" : null}});
    const tip = node("div");
    tip.appendChild(node("b", null, p.name + " (" + p.id + ")"));
    tip.appendChild(node("div", null, road ? say("road", {width: p.width_m}) : say("area")));
    if (p.exempt) tip.appendChild(node("div", null, say("exempt")));
    layer.bindTooltip(tip, {sticky: true});
    return layer;
  }

  function carParkContent(p) {
    const tip = node("div");
    tip.appendChild(node("b", null, p.name));
    tip.appendChild(node("div", null, p.free === null ? say("no_count")
      : say("free", {free: p.free, capacity: p.capacity}) + " · " + say("fill." + p.fill)));
    return tip;
  }

  function carParkLayer(f) {
    const p = f.properties;
    const c = f.geometry.coordinates;
    const layer = L.circleMarker([c[1], c[0]], {radius: 7, weight: 2, color: "#ffffff", fillOpacity: 0.95,
                                                fillColor: p.colour, className: "pw-car-park pw-fill-" + p.fill});
    layer.bindTooltip(carParkContent(p));
    return layer;
  }

  function updateCarPark(layer, f) {
    const p = f.properties;
    layer.setStyle({fillColor: p.colour});
    const path = layer.getElement();
    if (path) path.setAttribute("class", "leaflet-interactive pw-car-park pw-fill-" + p.fill);
    layer.setTooltipContent(carParkContent(p));
  }

  function cameraContent(p) {
    const box = node("div");
    box.appendChild(node("b", null, p.id));
    box.appendChild(node("div", null, p.place + " · " + p.zone));
    box.appendChild(node("div", p.silent ? "silent" : null,
      (p.age_seconds === null ? say("no_capture") : say("last_capture", {age: age(p.age_seconds)}))
      + (p.silent ? " · " + say("silent") : "")));
    if (p.usual_gap_seconds !== null) box.appendChild(node("div", "muted", say("usual_gap", {gap: age(Math.round(p.usual_gap_seconds))})));
    return box;
  }

  function cameraPopup(p) {
    const box = cameraContent(p);
    box.appendChild(link(p.href, say("camera_cases")));
    return box;
  }

  function cameraLayer(f) {
    const p = f.properties;
    const c = f.geometry.coordinates;
    const layer = L.circleMarker([c[1], c[0]], cameraStyle(p));
    layer.bindTooltip(cameraContent(p));
    layer.bindPopup(cameraPopup(p));
    return layer;
  }

  function cameraStyle(p) {
    return {radius: p.silent ? 8 : 6, weight: p.silent ? 3 : 2, color: p.silent ? "#c62828" : "#ffffff",
            fillColor: p.silent ? "#ffcdd2" : "#1565c0", fillOpacity: 1,
            className: "pw-camera" + (p.silent ? " pw-camera-silent" : "")};
  }

  function updateCamera(layer, f) {
    const p = f.properties;
    const style = cameraStyle(p);
    layer.setStyle(style);
    layer.setRadius(style.radius);
    const path = layer.getElement();
    if (path) path.setAttribute("class", "leaflet-interactive " + style.className);
    layer.setTooltipContent(cameraContent(p));
    layer.setPopupContent(cameraPopup(p));
  }

  function countdown(span) {
    const left = Math.round((Date.parse(span.dataset.deadline) - Date.now() - clockOffset) / 1000);
    span.textContent = left <= 0 ? say("overdue")
      : say("left", {left: Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0")});
    span.classList.toggle("soon", left > 0 && left <= 60);
    span.classList.toggle("overdue", left <= 0);
  }

  function timeLeft(p) {
    if (p.left === "deadline") {
      const span = node("span", "map-countdown");
      span.dataset.deadline = p.deadline_at;
      countdown(span);
      return span;
    }
    if (p.left === "recheck") return node("span", "muted", say("recheck", {at: clock.format(new Date(p.recheck_at))}));
    return node("span", "muted", say("awaiting_sms"));
  }

  function caseLabel(p) {
    const label = node("span");
    label.appendChild(node("b", null, p.plate + " "));
    label.appendChild(timeLeft(p));
    return label;
  }

  function casePopup(p) {
    const box = node("div");
    box.appendChild(link(p.href, p.plate, "plate"));
    box.appendChild(node("span", "badge s-" + p.state, say("state." + p.state)));
    box.appendChild(node("div", null, p.place + " · " + p.zone));
    box.appendChild(node("div")).appendChild(timeLeft(p));
    box.appendChild(link(p.href, say("open_case")));
    return box;
  }

  function caseLayer(f) {
    const p = f.properties;
    const c = f.geometry.coordinates;
    const layer = L.circleMarker([c[1], c[0]], {radius: 8, weight: 2, color: "#ffffff", fillOpacity: 1,
                                                fillColor: p.state === "warned" ? "#ef6c00" : "#6a1b9a",
                                                className: "pw-case pw-case-" + p.state});
    layer.bindTooltip(caseLabel(p), {permanent: true, direction: "right", offset: [8, 0], className: "pw-case-label"});
    layer.bindPopup(casePopup(p));
    return layer;
  }

  function updateCase(layer, f) {
    const p = f.properties;
    layer.setStyle({fillColor: p.state === "warned" ? "#ef6c00" : "#6a1b9a"});
    layer.setTooltipContent(caseLabel(p));
    layer.setPopupContent(casePopup(p));
  }

  const make = {zone: zoneLayer, car_park: carParkLayer, camera: cameraLayer, case: caseLayer};
  const update = {car_park: updateCarPark, camera: updateCamera, case: updateCase};

  // ── keeping the layers up to date ─────────────────────────────────────────────────────

  function sync(layer, features) {
    const seen = {};
    features.forEach(function (f) {
      const key = JSON.stringify(f);
      const had = drawn[layer][f.id];
      seen[f.id] = true;
      if (had && had.key === key) return;
      if (had && update[layer]) {
        update[layer](had.layer, f);
      } else {
        if (had) groups[layer].removeLayer(had.layer);
        drawn[layer][f.id] = {layer: make[layer](f).addTo(groups[layer])};
      }
      drawn[layer][f.id].key = key;
    });
    Object.keys(drawn[layer]).forEach(function (id) {
      if (!seen[id]) {
        groups[layer].removeLayer(drawn[layer][id].layer);
        delete drawn[layer][id];
      }
    });
  }

  function listSilent(cameras) {
    const list = document.getElementById("silent-cameras");
    const silent = cameras.filter(function (f) { return f.properties.silent; });
    list.replaceChildren.apply(list, silent.length ? silent.map(function (f) {
      const p = f.properties;
      const item = node("li");
      item.dataset.camera = p.id;
      item.appendChild(link(p.href, p.id));
      item.appendChild(document.createTextNode(" " + p.place + " · "
        + (p.age_seconds === null ? say("no_capture") : say("last_capture", {age: age(p.age_seconds)}))));
      return item;
    }) : [node("li", "muted", say("none_silent"))]);
  }

  function show(data) {
    clockOffset = Date.parse(data.now) - Date.now();
    const by = {zone: [], car_park: [], camera: [], case: []};
    data.features.forEach(function (f) { by[f.properties.layer].push(f); });
    Object.keys(by).forEach(function (layer) {
      sync(layer, by[layer]);
      control.removeLayer(groups[layer]);
      let label = say(names[layer]) + " (" + by[layer].length + ")";
      if (layer === "camera" && data.summary.silent_cameras) label += " · " + say("silent") + " " + data.summary.silent_cameras;
      if (layer === "case" && data.summary.open_cases > by.case.length) {
        label += " · " + say("more_cases", {shown: by.case.length, total: data.summary.open_cases});
      }
      control.addOverlay(groups[layer], label);
    });
    listSilent(by.camera);
    if (!fitted) {
      const points = L.featureGroup([groups.camera, groups.car_park, groups.case]);
      const bounds = points.getBounds().isValid() ? points.getBounds() : groups.zone.getBounds();
      if (bounds.isValid()) {
        map.fitBounds(bounds, {padding: [24, 24], maxZoom: 17});
        fitted = true;
      } else {
        map.setView([0, 0], 2);
      }
    }
    tick();
    el.dataset.loaded = String(Number(el.dataset.loaded || 0) + 1);
  }

  function tick() {
    el.querySelectorAll(".map-countdown[data-deadline]").forEach(countdown);
  }

  function load() {
    const status = document.getElementById("map-status");
    fetch(el.dataset.src, {credentials: "same-origin", headers: {Accept: "application/geo+json"}})
      .then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      })
      .then(function (data) {
        status.hidden = true;
        show(data);
      })
      .catch(function () {
        status.textContent = say("failed");
        status.hidden = false;
      })
      .finally(function () { setTimeout(load, Number(el.dataset.refresh) || 5000); });
  }

  load();
  setInterval(tick, 1000);
})();
