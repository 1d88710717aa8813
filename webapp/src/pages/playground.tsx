import { Section } from "../components/ui";

export function PlaygroundPage(_props: { params: string[] }) {
  return <Section title="PlaygroundPage"><p>Not built yet.</p></Section>;
}
