// Package layering holds no code: its test enforces the import rules of
// the tree (STYLE.md "One composition root"). Leaf packages, which are all
// of internal/ but the composition root and the packages that face the
// user, never import node, engine, adminapi or cli, directly or through
// another package.
package layering
