import { Section } from "../components/ui";

export function DatanetList(_props: { params: string[] }) {
  return <Section title="DatanetList"><p>Not built yet.</p></Section>;
}

export function DatanetPage(_props: { params: string[] }) {
  return <Section title="DatanetPage"><p>Not built yet.</p></Section>;
}

