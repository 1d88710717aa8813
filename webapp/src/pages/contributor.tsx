import { Section } from "../components/ui";

export function ContributorPage(_props: { params: string[] }) {
  return <Section title="ContributorPage"><p>Not built yet.</p></Section>;
}
