// eslint for the extension's TypeScript (src/); formatting is prettier's (.prettierrc.json), so
// eslint-config-prettier turns off the rules that would disagree with it.
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  { ignores: ['lib/', 'node_modules/', '.yarn/', '../jupyter_flow/labextension/'] },
  {
    files: ['src/**/*.{ts,tsx}'],
    extends: [...tseslint.configs.recommended, prettier],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off', // lumino and JupyterLab hand us untyped objects
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      eqeqeq: ['error', 'smart'],
      curly: ['error', 'all']
    }
  }
);
