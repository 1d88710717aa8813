// Hash routes (#/models/1/versions/2): every page has an address a person can share, and the
// API process serves one index.html for all of them.

import { useEffect, useState } from "preact/hooks";

export function currentPath(): string[] {
  const path = window.location.hash.replace(/^#\/?/, "").split("?")[0];
  return path.split("/").filter(Boolean).map(decodeURIComponent);
}

export function useRoute(): string[] {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const onChange = () => {
      setPath(currentPath());
      window.scrollTo(0, 0);
    };
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return path;
}

/** The link to a page: href("models", 1) is "#/models/1". */
export function href(...parts: (string | number)[]): string {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}
