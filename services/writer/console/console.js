// The console's only script: enhancements a page works without.
// Copy buttons put their data-copy text on the clipboard.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button || !navigator.clipboard) {
    return;
  }
  event.preventDefault();
  navigator.clipboard.writeText(button.dataset.copy).then(
    () => {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    },
    () => { button.textContent = "Copy failed"; },
  );
});
// Copy buttons only make sense with a script: shown once it runs.
for (const button of document.querySelectorAll("button[data-copy][hidden]")) {
  button.hidden = false;
}
