// cnntool microscope: layer pages sort and filter their unit cards; unit pages go to the
// previous/next unit with the arrow keys or k/j. Everything else is plain HTML.
(function () {
  "use strict";

  const grid = document.querySelector(".units[data-sortable]");
  if (grid) {
    const cards = Array.from(grid.querySelectorAll(".unit-card"));
    const sortBy = document.getElementById("sort");
    const hideDead = document.getElementById("hide-dead");
    const shown = document.getElementById("shown");

    // A card's figure for `key`; missing figures (no sparsity for a linear layer) sort last.
    const value = (card, key) => {
      const v = parseFloat(card.dataset[key]);
      return Number.isNaN(v) ? -Infinity : v;
    };

    const update = () => {
      const key = sortBy.value;
      const order = key === "unit" ? 1 : -1;  // unit index ascending, figures largest first
      const sorted = cards.slice().sort((a, b) =>
        order * (value(a, key) - value(b, key)) || value(a, "unit") - value(b, "unit"));
      let visible = 0;
      for (const card of sorted) {
        card.hidden = hideDead.checked && card.dataset.dead === "1";
        if (!card.hidden) visible += 1;
        grid.appendChild(card);  // moving a node keeps Tab order equal to what is seen
      }
      shown.textContent = `${visible} of ${cards.length} units`;
    };

    sortBy.addEventListener("change", update);
    hideDead.addEventListener("change", update);
    update();
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (/^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(event.target.tagName)) return;
    const rel = { ArrowLeft: "prev", k: "prev", ArrowRight: "next", j: "next" }[event.key];
    const link = rel && document.querySelector(`a[rel~="${rel}"]`);
    if (link) {
      event.preventDefault();
      window.location.href = link.href;
    }
  });
})();
