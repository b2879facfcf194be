// ESLint flat config for the viewer's browser code (plain ES modules in static/js, no bundler).
// Run with `npm run lint` (or `npx eslint static/js`); eslint comes from devDependencies, never global.
import js from "@eslint/js";
import globals from "globals";

export default [
  {
    // Installed packages, local data, test output and the Python venv are never ours to lint.
    ignores: ["node_modules/**", "data/**", "test-artifacts/**", ".venv/**"],
  },
  js.configs.recommended,
  {
    files: ["static/js/**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: {
        ...globals.browser,
        // OpenSeadragon 6 is loaded by a classic <script> tag in templates/panes_base.html.
        OpenSeadragon: "readonly",
      },
    },
    rules: {
      // Dead code is an error; unused trailing params and `_`-prefixed names are deliberate.
      "no-unused-vars": ["error", {
        args: "after-used", argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_",
      }],
      // Strict equality everywhere, except the idiomatic `x == null` and typeof/literal comparisons.
      eqeqeq: ["error", "smart"],
      // Block-scoped bindings only.
      "no-var": "error",
      // Bindings that are never reassigned are declared const.
      "prefer-const": "error",
      // An inner binding must not hide an outer one of the same name (a common source of mix-ups).
      "no-shadow": ["error", { builtinGlobals: false, hoist: "functions" }],
    },
  },
  {
    // This config file itself runs in Node.
    files: ["eslint.config.mjs"],
    languageOptions: { sourceType: "module", globals: globals.node },
  },
];
