// The overview's collapsible nodes. Which nodes are expanded is remembered in the
// gf_nodes cookie ("auto|open|closed:" + the nodes toggled against that default, by the
// first 12 hex digits of their id), read by the server when it renders the page and the
// websocket's resync, and sent over the socket on every change ({"nodes": value}) so
// that the server pushes GPU rows only for expanded nodes and sends back the sections
// that opened. Collapsing hides the rows at once; expanding waits for the server.
(function () {
  const COOKIE = "gf_nodes";
  const MAX_FLIPPED = 120;
  let socket = null;

  function readState() {
    const match = document.cookie.match(/(?:^|;\s*)gf_nodes=([^;]*)/);
    const [mode, rest] = (match ? decodeURIComponent(match[1]) : "auto:").split(":");
    const flipped = (rest || "").split(".").filter(function (id) { return /^[0-9a-f]{12}$/.test(id); });
    return { mode: ["auto", "open", "closed"].includes(mode) ? mode : "auto", flipped: flipped };
  }

  function writeState(state) {
    const value = state.mode + ":" + state.flipped.slice(-MAX_FLIPPED).join(".");
    // Only [a-z0-9:.] in it: no encoding, so that the server reads it as written.
    document.cookie = COOKIE + "=" + value + "; path=/; max-age=31536000; samesite=lax";
    if (socket) socket.send(JSON.stringify({ nodes: value }));
  }

  function toggle(button) {
    const section = button.closest("section.node");
    const state = readState();
    const id = button.dataset.nodeToggle;
    const at = state.flipped.indexOf(id);
    if (at >= 0) state.flipped.splice(at, 1); else state.flipped.push(id);
    if (section.classList.contains("open")) {
      section.classList.remove("open");
      const table = section.querySelector("table.smi");
      if (table) table.remove();
      button.setAttribute("aria-expanded", "false");
    } else {
      section.classList.add("open", "loading");
      button.setAttribute("aria-expanded", "true");
    }
    writeState(state);
  }

  function setAll(mode) {
    document.querySelectorAll("section.node").forEach(function (section) {
      if (mode === "closed") {
        section.classList.remove("open");
        const table = section.querySelector("table.smi");
        if (table) table.remove();
      } else if (!section.classList.contains("open")) {
        section.classList.add("loading");
      }
    });
    writeState({ mode: mode, flipped: [] });
  }

  document.addEventListener("click", function (e) {
    const button = e.target.closest && e.target.closest("[data-node-toggle]");
    if (button) { toggle(button); return; }
    const all = e.target.closest && e.target.closest("[data-nodes-all]");
    if (all) setAll(all.dataset.nodesAll);
  });
  document.addEventListener("htmx:wsOpen", function (e) { socket = e.detail.socketWrapper; });
  document.addEventListener("htmx:wsClose", function () { socket = null; });

  // "n of m nodes match" follows nodes that start or stop matching the filter live.
  document.addEventListener("htmx:wsAfterMessage", function () {
    const shown = document.getElementById("fleet-shown");
    const fleet = document.getElementById("fleet");
    if (!shown || !fleet || !shown.dataset.filtered) return;
    const visible = fleet.querySelectorAll("section.node:not([hidden])").length;
    shown.textContent = visible + " of " + fleet.dataset.nodes + " nodes match";
  });
})();
