// Breakdown widget: parameter counts, LoRA cost per matrix type and the memory ledger.
// A snapshot says "as of …"; a widget that follows the session's events carries a "live" badge.
import { el, renderLedger, mount } from "./format.js";

function render({ model, el: host }) {
  const root = el("div", { class: "qn-card qn-breakdown", "data-testid": "qlora-breakdown" });
  mount(host, root);
  const draw = () => {
    const asOf = model.get("as_of") || "";
    const live = asOf === "live";
    renderLedger(root, model.get("ledger"), model.get("title"), { asOf: live ? "" : asOf, live, openTable: true });
  };
  model.on("change:ledger", draw);
  model.on("change:title", draw);
  model.on("change:as_of", draw);
  draw();
}
export default { render };
