// Connection indicator for the live overview: shows when live updates stop.
(function () {
  const STALE_AFTER_MS = 5000;
  let lastMessage = 0;
  function indicator() { return document.getElementById("live-status"); }
  function show(state, text) {
    const el = indicator();
    if (!el) return;
    el.className = "live " + state;
    el.textContent = text;
  }
  document.addEventListener("htmx:wsOpen", function () { lastMessage = Date.now(); show("live", "live"); });
  document.addEventListener("htmx:wsClose", function (e) {
    // 4401: the login session ended (logout elsewhere, password change, expiry): reload,
    // which lands on the login page, rather than reconnect forever.
    if (e.detail && e.detail.event && e.detail.event.code === 4401) { window.location.reload(); return; }
    show("down", "disconnected — reconnecting…");
  });
  document.addEventListener("htmx:wsError", function () { show("down", "connection error"); });
  document.addEventListener("htmx:wsAfterMessage", function () {
    lastMessage = Date.now();
    const el = indicator();
    if (el && !el.classList.contains("live")) show("live", "live");
  });
  setInterval(function () {
    const el = indicator();
    if (el && el.classList.contains("live") && Date.now() - lastMessage > STALE_AFTER_MS) {
      show("stale", "no updates for " + Math.round((Date.now() - lastMessage) / 1000) + " s");
    }
  }, 1000);
})();
