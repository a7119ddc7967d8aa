// Breakdown widget: parameter counts, LoRA cost per matrix type and the memory ledger.
// A snapshot says "as of …"; a widget that follows the session's events carries a "live" badge.
import { el, renderLedger, isolateKeys, markLive } from "./format.js";

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-breakdown", "data-testid": "qlora-breakdown" });
  isolateKeys(root);
  host.append(root);
  markLive(root);
  const draw = () => {
    const asOf = model.get("as_of") || "";
    renderLedger(root, model.get("ledger"), model.get("title"), { asOf: asOf === "live" ? "" : asOf, openTable: true });
    if (asOf === "live") {
      const t = root.querySelector(".qn-title");
      if (t) t.append(" ", el("span", { class: "qn-live-badge", "data-testid": "as-of" }, "live"));
    }
  };
  model.on("change:ledger", draw);
  model.on("change:title", draw);
  model.on("change:as_of", draw);
  draw();
}
export default { render };
