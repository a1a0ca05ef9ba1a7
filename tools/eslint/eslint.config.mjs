// ESLint for the HTML report's script (capsule/report/assets/report.js), run by `just lint`.
// The script is a classic browser script (no modules) inside a strict-CSP page.
import js from "@eslint/js";

export default [
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2020,
      sourceType: "script",
      globals: {
        window: "readonly",
        document: "readonly",
        requestAnimationFrame: "readonly",
      },
    },
    rules: {
      "no-var": "off", // the page keeps to ES5-style vars: one function scope, read top to bottom
      eqeqeq: "error",
      "no-implicit-globals": "error",
      "no-unused-vars": ["error", { args: "none" }],
      "no-shadow": "error",
      "no-eval": "error",
      "no-new-func": "error",
      "no-implied-eval": "error",
    },
  },
];
