// Applies the saved theme before the first paint (loaded synchronously from <head>, so the page
// does not flash in the wrong colours). No choice saved: the OS preference decides, through CSS.
(function () {
  try {
    var t = localStorage.getItem("orgmesh.theme");
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage blocked: follow the OS */ }
})();
