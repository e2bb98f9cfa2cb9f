// tomoe web UI: live updates over server-sent events. The pages work
// without it; this only refreshes the peers table and fills the event log.
"use strict";
(function () {
  var page = document.body.getAttribute("data-page");
  var live = document.getElementById("live");
  if (page !== "peers" && page !== "events") {
    return;
  }
  var peerEvents = { peer_added: 1, peer_removed: 1, peer_up: 1, peer_down: 1, handshake: 1, policy_revoke: 1, policy_allow: 1, config_reloaded: 1 };
  var types = Object.keys(peerEvents).concat(["policy_expired", "denied", "admission_denied", "events_overflowed"]);
  var pending = false;

  function setLive(ok) {
    if (!live) { return; }
    live.classList.toggle("off", !ok);
    live.textContent = ok ? "Live: following the node's events." : "Not live: reconnecting to the node…";
  }

  function refreshPeers() {
    if (pending) { return; }
    pending = true;
    fetch("/peers/rows", { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error("status " + r.status); } return r.text(); })
      .then(function (html) { document.getElementById("peer-rows").innerHTML = html; })
      .catch(function () { setLive(false); })
      .finally(function () { pending = false; });
  }

  var filter = document.getElementById("event-filter");
  var log = document.getElementById("event-log");
  function matches(li) {
    var q = filter ? filter.value.trim().toLowerCase() : "";
    return q === "" || li.textContent.toLowerCase().indexOf(q) >= 0;
  }
  function addEvent(type, data) {
    var ev = {};
    try { ev = JSON.parse(data); } catch (e) { ev = { detail: data }; }
    var li = document.createElement("li");
    var t = document.createElement("span");
    t.className = "type";
    t.textContent = type;
    li.appendChild(t);
    var parts = [ev.time, ev.address, ev.endpoint, ev.detail, ev.count ? "count " + ev.count : ""];
    li.appendChild(document.createTextNode(" " + parts.filter(Boolean).join(" · ")));
    li.hidden = !matches(li);
    log.insertBefore(li, log.firstChild);
    while (log.children.length > 500) { log.removeChild(log.lastChild); }
  }
  if (filter) {
    filter.addEventListener("input", function () {
      for (var i = 0; i < log.children.length; i++) { log.children[i].hidden = !matches(log.children[i]); }
    });
  }

  var es = new EventSource("/events/stream");
  es.onopen = function () { setLive(true); if (page === "peers") { refreshPeers(); } };
  es.onerror = function () { setLive(false); };
  types.forEach(function (type) {
    es.addEventListener(type, function (e) {
      if (page === "peers" && peerEvents[type]) { refreshPeers(); }
      if (page === "events") { addEvent(type, e.data); }
    });
  });
  if (page === "peers") {
    setInterval(refreshPeers, 2000); // bytes, rates and handshake ages move without events
  }
})();
