// Figures as the pages write them: two decimals or a dash, and one annotated class's
// localisation line (/localization), the same on the slide page and the comparison page.

/** A figure to two decimals, or a dash for none. */
export function format(value, digits = 2) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

/** "Tumor: AUROC 0.91 · top-10 inside 0.80 · top-5 % inside 0.75 · Dice ≥ 0.50 0.62" */
export function localizationText(c) {
  const region = c.hi < 1 ? `[${c.threshold.toFixed(2)}, ${c.hi.toFixed(2)}]` : `≥ ${c.threshold.toFixed(2)}`;
  return `${c.class}: AUROC ${format(c.auroc)} · top-10 inside ${format(c.top_inside["10"])} · `
    + `top-5 % inside ${format(c.top_inside["5%"])} · Dice ${region} ${format(c.dice)}`;
}
