// Behaviour that used to sit in inline on* attributes, which the Content-Security-Policy
// (script-src 'self') refuses to run:
//   <form data-confirm="Delete it?">   asks before submitting;
//   <form data-navigate-on-change>     goes to the URL its <select> holds when it changes;
//   <select name="backend"> with [data-for-backend="<value>"] elements: only the chosen
//                                      backend's show (the new deployment's option lists).
(function () {
  function showBackend(select) {
    document.querySelectorAll("[data-for-backend]").forEach(function (el) {
      el.hidden = el.dataset.forBackend !== select.value;
    });
  }
  const backend = document.querySelector("select[name=backend]");
  if (backend) showBackend(backend);
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("select[name=backend]")) showBackend(e.target);
  });
  document.addEventListener("submit", function (e) {
    const form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
  }, true);
  document.addEventListener("change", function (e) {
    const form = e.target.closest("form[data-navigate-on-change]");
    const select = form && form.querySelector("select");
    if (select) window.location = select.value;
  });
})();
